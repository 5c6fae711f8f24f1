"""Data dirs as Kaldi users write them (issue 15, item 4), on the real speech samples: speaker
ids that are not prefixes of utterance ids, data dirs without speakers for the feature stage,
unreadable audio in the duration pass, and text ids without audio. Every refusal says what to
run, and running it works."""

import os
import re
import shutil
import subprocess

import kaldiio
import pytest

from conftest import REPO, SAMPLES, make_data_dir, read_pairs, run_feats_stage, run_stage

BASE = ["arctic-aew-a0001", "ljspeech-lj-002-0020", "ljspeech-lj-002-0035"]
SPK1 = REPO / "egs" / "sample_speakers" / "spk1"


def load_keys(scp):
    return [key for key, _ in kaldiio.load_scp_sequential(str(scp))]


def write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def run_fbank(args, env, check=True):
    return run_feats_stage(["--toolkit", "fbank", "--nj", 2, *args], env, check=check)


def run_advice(command, env):
    """Runs a command a message gave, as the user would: in a shell, from the repository."""
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_speaker_ids_that_are_not_prefixes_of_utterance_ids(tmp_path, stage_env):
    """Kaldi's rule: tables sorted by utterance id, spk2utt sorted by speaker and matching
    utt2spk. The one repair the stage names, utils/fix_data_dir.sh, is enough: no loop."""
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    speakers = {"arctic-aew-a0001": "zz-reader", "ljspeech-lj-002-0020": "aa-reader",
                "ljspeech-lj-002-0035": "aa-reader"}
    write_lines(data / "utt2spk", [f"{utt} {spk}" for utt, spk in speakers.items()])
    # As utils/utt2spk_to_spk2utt.pl writes it: speakers in order of first appearance.
    write_lines(data / "spk2utt", ["zz-reader arctic-aew-a0001",
                                   "aa-reader ljspeech-lj-002-0020 ljspeech-lj-002-0035"])
    out = tmp_path / "out"
    proc = run_stage(["--nj", 2, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"validate_data_dir.sh: {data}/spk2utt is not sorted (LC_ALL=C): key 'aa-reader' "
            f"on line 2 comes after 'zz-reader'; utils/fix_data_dir.sh {data} repairs this"
            ) in proc.stderr
    assert f"ERROR: {data} is not a valid data dir" in proc.stderr
    assert "--no-spk-sort" not in proc.stderr and not out.exists()

    run_advice(f"utils/fix_data_dir.sh {data}", stage_env)
    assert (data / "spk2utt").read_text() == ("aa-reader ljspeech-lj-002-0020 "
                                              "ljspeech-lj-002-0035\nzz-reader arctic-aew-a0001\n")
    proc = run_stage(["--nj", 2, data, out], stage_env)
    assert "spk2utt does not match" not in proc.stderr
    assert load_keys(out / "resemblyzer.scp") == BASE
    assert load_keys(out / "spk_resemblyzer.scp") == ["aa-reader", "zz-reader"]
    # The data dir check of a recipe's stage 2 says it once, as a warning.
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-text", str(data)],
                           env=stage_env, capture_output=True, text=True)
    assert check.returncode == 0
    assert (f"validate_data_dir.sh: warning: {data}/utt2spk is not also sorted by speaker "
            "(utterance 'ljspeech-lj-002-0020' (speaker 'aa-reader', line 2) comes after "
            "'arctic-aew-a0001' (speaker 'zz-reader'))") in check.stderr


def test_spk2utt_that_disagrees_with_utt2spk_is_named_and_repaired(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    write_lines(data / "spk2utt", ["arctic-aew arctic-aew-a0001 ljspeech-lj-002-0020",
                                   "ljspeech-lj ljspeech-lj-002-0035"])
    proc = run_stage(["--nj", 2, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"{data}/spk2utt does not match {data}/utt2spk: utterance 'ljspeech-lj-002-0020' is "
            f"under speaker 'arctic-aew' (line 1), {data}/utt2spk says 'ljspeech-lj'; "
            f"utils/fix_data_dir.sh {data} repairs this") in proc.stderr
    run_advice(f"utils/fix_data_dir.sh {data}", stage_env)
    run_stage(["--nj", 2, data, tmp_path / "out"], stage_env)
    assert load_keys(tmp_path / "out" / "spk_resemblyzer.scp") == ["arctic-aew", "ljspeech-lj"]


def test_feature_stage_needs_only_wav_scp(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    os.remove(data / "utt2spk")
    os.remove(data / "spk2utt")
    out = tmp_path / "out"
    proc = run_fbank([data, out], stage_env)
    assert load_keys(out / "feats.scp") == BASE
    assert "utt2spk" not in proc.stderr


def test_feature_stage_needs_only_wav_scp_and_segments(tmp_path, stage_env):
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data / "wav.scp", [f"jfk {SAMPLES / 'audio' / 'jfk-inaugural1961.flac'}"])
    write_lines(data / "segments", ["jfk-000 jfk 0.00 2.00", "jfk-001 jfk 2.00 4.50",
                                    "jfk-002 jfk 4.50 7.00"])
    out = tmp_path / "out"
    run_fbank([data, out], stage_env)
    assert load_keys(out / "feats.scp") == ["jfk-000", "jfk-001", "jfk-002"]
    assert dict(read_pairs(out / "utt2num_frames")) == {
        "jfk-000": "198", "jfk-001": "248", "jfk-002": "248"}


def test_speaker_stage_without_utt2spk_names_a_command_that_works(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    os.remove(data / "utt2spk")
    os.remove(data / "spk2utt")
    out = tmp_path / "out"
    proc = run_stage(["--nj", 2, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert f"ERROR: {data}/utt2spk is missing: the speaker stage averages" in proc.stderr
    command = re.search(r"make each utterance its own speaker: (.*)$", proc.stderr, re.M)[1]
    assert command == (f"awk '{{print $1, $1}}' {data}/wav.scp > {data}/utt2spk && "
                       f"utils/utt2spk_to_spk2utt.pl {data}/utt2spk > {data}/spk2utt")
    assert not out.exists()
    run_advice(command, stage_env)
    run_stage(["--nj", 2, data, out], stage_env)
    assert load_keys(out / "spk_resemblyzer.scp") == BASE


def test_unsorted_data_dir_without_speakers_names_the_repair_that_works(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    os.remove(data / "utt2spk")
    os.remove(data / "spk2utt")
    lines = (data / "wav.scp").read_text().splitlines()
    write_lines(data / "wav.scp", lines[::-1])
    out = tmp_path / "out"
    proc = run_fbank([data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"validate_data_dir.sh: {data}/wav.scp is not sorted (LC_ALL=C): key "
            "'ljspeech-lj-002-0020' on line 2 comes after 'ljspeech-lj-002-0035'; "
            f"utils/fix_data_dir.sh --spk-optional {data} repairs this") in proc.stderr
    run_advice(f"utils/fix_data_dir.sh --spk-optional {data}", stage_env)
    run_fbank([data, out], stage_env)
    assert load_keys(out / "feats.scp") == BASE


@pytest.mark.parametrize("with_segments", [False, True])
def test_text_ids_without_audio_are_refused_before_extraction(tmp_path, stage_env,
                                                               with_segments):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    if with_segments:
        write_lines(data / "segments", [f"{utt} {utt} 0.00 1.00" for utt in BASE])
        source = data / "segments"
    else:
        source = data / "wav.scp"
    with open(data / "text", "a", encoding="utf-8") as f:
        f.write("zz-no-audio-0001 HELLO\nzz-no-audio-0002 THERE\n")
    out = tmp_path / "out"
    proc = run_fbank([data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"ERROR: 2 ids have no output: zz-no-audio-0001 zz-no-audio-0002 (they are in "
            f"{data}/text but not in {source}: no audio); nothing was written. Remove them "
            f"from text, or run utils/fix_data_dir.sh {data}") in proc.stderr
    assert not out.exists()  # refused before any job ran
    run_advice(f"utils/fix_data_dir.sh {data}", stage_env)
    run_fbank([data, out], stage_env)
    assert load_keys(out / "feats.scp") == BASE


def corrupt_data_dir(tmp_path):
    """BASE and a WAV whose header is followed by noise, as a data dir without utt2dur."""
    data = make_data_dir(tmp_path / "data" / "sample", keep=set(BASE))
    bad = tmp_path / "audio" / "arctic-aew-a0002.wav"
    bad.parent.mkdir()
    shutil.copy(SAMPLES / "audio" / bad.name, bad)
    with open(bad, "wb") as f:
        f.write(b"RIFF0000WAVEfmt " + os.urandom(300))
    for name, value in (("wav.scp", str(bad)), ("utt2spk", "arctic-aew"), ("text", "HELLO")):
        lines = (data / name).read_text().splitlines() + [f"arctic-aew-a0002 {value}"]
        write_lines(data / name, sorted(lines))
    write_lines(data / "spk2utt", ["arctic-aew arctic-aew-a0001 arctic-aew-a0002",
                                   "ljspeech-lj ljspeech-lj-002-0020 ljspeech-lj-002-0035"])
    os.remove(data / "utt2dur")
    return data, bad


def test_duration_pass_honours_skip_bad(tmp_path, stage_env):
    """Stage 2 lists unreadable audio with --skip_bad true, and stage 3 lists it in bad_utts."""
    data, bad = corrupt_data_dir(tmp_path)
    args = ["./run.sh", "--datadir", str(tmp_path / "data"), "--dumpdir", str(tmp_path / "dump"),
            "--stage", "2", "--stop_stage", "3", "--sets", "sample"]
    proc = subprocess.run(args, cwd=SPK1, env=stage_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1
    assert (f"ERROR: utterance 'arctic-aew-a0002' ({bad}): cannot read audio:") in proc.stderr
    assert "(--skip_bad true lists every unreadable utterance and goes on)" in proc.stderr
    assert not (tmp_path / "dump").exists()

    proc = subprocess.run(args + ["--skip_bad", "true"], cwd=SPK1, env=stage_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (f"get_utt2dur.py: skipped 'arctic-aew-a0002': utterance 'arctic-aew-a0002' ({bad}): "
            "cannot read audio:") in proc.stderr
    assert (f"get_utt2dur.py: 1 of 4 utterances of {data} cannot be read: arctic-aew-a0002 "
            "(reasons above)") in proc.stdout
    assert not (data / "utt2dur").exists()
    out = tmp_path / "dump" / "resemblyzer" / "sample"
    assert [key for key, _ in read_pairs(out / "bad_utts")] == ["arctic-aew-a0002"]
    assert load_keys(out / "resemblyzer.scp") == BASE
    assert "skipped 1 bad utterances: arctic-aew-a0002" in proc.stdout
