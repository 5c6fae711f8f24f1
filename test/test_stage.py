"""scripts/extract_spk_embed.sh end to end on the real speech samples."""

import os
import shutil
import subprocess

import kaldiio
import numpy as np
import pytest
import soundfile

from conftest import REPO, assert_equal_to_rounding, make_data_dir, read_pairs, run_stage

TEXT_IDS = [key for key, _ in read_pairs(REPO / "samples" / "real_speech" / "text")]
SHORT = {"arctic-aew-a0001", "arctic-aew-a0003", "ljspeech-lj-002-0020", "ljspeech-lj-002-0035",
         "vctk-p238-165", "vctk-p225-003"}  # a quick subset: 4 speakers, 3 rates


def load(scp):
    return list(kaldiio.load_scp_sequential(str(scp)))


@pytest.fixture(scope="module")
def nj_runs(tmp_path_factory, stage_env):
    """The full sample corpus extracted with --nj 1 and --nj 3 (relative paths, run in its dir)."""
    base = tmp_path_factory.mktemp("nj")
    make_data_dir(base / "data")
    runs = {}
    for nj in (1, 3):
        proc = run_stage(["--nj", nj, "data", f"out{nj}"], stage_env, cwd=base)
        runs[nj] = (base / f"out{nj}", proc)
    return base, runs


@pytest.mark.kernels
def test_nj_does_not_change_keys_order_or_values(nj_runs, monkeypatch):
    base, runs = nj_runs
    # ark paths in the scps are relative to where the stage ran, as in Kaldi
    monkeypatch.chdir(base)
    for name in ("resemblyzer.scp", "spk_resemblyzer.scp"):
        one, three = load(runs[1][0] / name), load(runs[3][0] / name)
        assert_equal_to_rounding(dict(three), dict(one),
                                 "the LSTM runs other partials together at --nj 3")


def test_output_is_aligned_with_text(nj_runs, monkeypatch):
    base, runs = nj_runs
    monkeypatch.chdir(base)
    out, proc = runs[3]
    utts = load(out / "resemblyzer.scp")
    assert [k for k, _ in utts] == TEXT_IDS
    assert all(v.shape == (256,) and np.isfinite(v).all() for _, v in utts)
    utt2spk = dict(read_pairs(base / "data" / "utt2spk"))
    speakers = sorted({utt2spk[u] for u in TEXT_IDS})
    spk = load(out / "spk_resemblyzer.scp")
    assert [k for k, _ in spk] == speakers
    for speaker, mean in spk:  # the L2-normalised mean of that speaker's utterances
        own = np.mean([v for u, v in utts if utt2spk[u] == speaker], axis=0)
        np.testing.assert_allclose(mean, own / np.linalg.norm(own), atol=1e-6)
    assert kaldiio.load_scp(str(out / "resemblyzer.scp"))[TEXT_IDS[0]].shape == (256,)


def test_ids_without_text_are_dropped_and_listed(nj_runs):
    _, runs = nj_runs
    out, proc = runs[3]
    dropped = [key for key, _ in read_pairs(out / "dropped_utts")]
    assert len(dropped) == 11 and "ls-6829-rtvc00000" in dropped
    assert "dropped 11 ids not in" in proc.stdout and "ls-6829-rtvc00000" in proc.stdout
    assert "15 utterances, 8 speakers" in proc.stdout
    assert "h of audio" in proc.stdout and "wall time" in proc.stdout


def test_rerun_skips_finished_jobs(nj_runs, stage_env, monkeypatch):
    base, runs = nj_runs
    monkeypatch.chdir(base)
    before = load(runs[3][0] / "resemblyzer.scp")
    run_stage(["--nj", 3, "data", "out3"], stage_env, cwd=base)
    for job in (1, 2, 3):
        assert "nothing to do" in (base / "out3" / "log" / f"extract.{job}.log").read_text()
    after = load(runs[3][0] / "resemblyzer.scp")
    assert [k for k, _ in after] == [k for k, _ in before]


def test_a_lost_job_is_redone_alone(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    out = tmp_path / "out"
    run_stage(["--nj", 2, data, out], stage_env)
    first = load(out / "resemblyzer.scp")
    os.remove(out / "split2" / "done.2")  # as if job 2 had been killed before finishing
    os.remove(out / "split2" / "resemblyzer.2.scp")
    run_stage(["--nj", 2, data, out], stage_env)
    assert "nothing to do" in (out / "log" / "extract.1.log").read_text()
    assert "nothing to do" not in (out / "log" / "extract.2.log").read_text()
    again = load(out / "resemblyzer.scp")
    assert [k for k, _ in again] == [k for k, _ in first]
    assert max(np.abs(a - b).max() for (_, a), (_, b) in zip(first, again)) <= 1e-6


def test_without_text_every_wav_scp_id_is_kept(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SHORT | {"ls-6829-rtvc00000"})
    os.remove(data / "text")
    run_stage(["--nj", 2, data, tmp_path / "out"], stage_env)
    keys = [k for k, _ in load(tmp_path / "out" / "resemblyzer.scp")]
    assert keys == [k for k, _ in read_pairs(data / "wav.scp")]


def test_text_id_without_audio_fails_naming_it(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    with open(data / "text", "a") as f:
        f.write("zz-no-audio-0001 HELLO\n")
    proc = run_stage(["--nj", 2, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode != 0
    assert "1 ids have no output: zz-no-audio-0001" in proc.stderr
    assert not (tmp_path / "out" / "resemblyzer.scp").exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda p: os.remove(p), "no such file"),
    (lambda p: open(p, "wb").write(b"RIFF0000WAVEfmt " + os.urandom(300)), "cannot read audio"),
])
def test_bad_audio_fails_naming_utterance_and_file(tmp_path, stage_env, damage, reason):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    victim = tmp_path / "audio" / "vctk-p238-165.wav"
    victim.parent.mkdir()
    shutil.copy(REPO / "samples" / "real_speech" / "audio" / victim.name, victim)
    lines = (data / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("".join(
        (f"vctk-p238-165 {victim}" if line.startswith("vctk-p238-165 ") else line) + "\n"
        for line in lines))
    damage(victim)
    proc = run_stage(["--nj", 2, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode != 0
    assert "ERROR: utterance 'vctk-p238-165'" in proc.stderr
    assert str(victim) in proc.stderr and reason in proc.stderr
    assert not (tmp_path / "out" / "resemblyzer.scp").exists()
    # The other job finished and is kept for the rerun.
    done = [f for f in os.listdir(tmp_path / "out" / "split2") if f.endswith(".scp")]
    assert len(done) == 1


def _with_bad_files(tmp_path):
    """SHORT plus eight bad utterances (sorted among them): corrupt, empty, 0.05 s, missing, a
    pipe that fails, a pipe that prints nothing, a truncated FLAC and NaN samples."""
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    audio = REPO / "samples" / "real_speech" / "audio"
    samples, rate = soundfile.read(audio / "arctic-aew-a0002.wav", dtype="float32")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x07" * 200)
    (bad / "empty.flac").write_bytes(b"")
    soundfile.write(bad / "blip.wav", samples[:800], rate)
    flac = (audio / "ls-1688-142285-0006.flac").read_bytes()
    (bad / "truncated.flac").write_bytes(flac[:60])  # cut inside the stream info
    samples[1000:1010] = np.nan
    soundfile.write(bad / "nan.wav", samples, rate, subtype="FLOAT")
    entries = {"arctic-aew-b-corrupt": bad / "corrupt.wav",
               "arctic-aew-c-empty": bad / "empty.flac",
               "arctic-aew-d-blip": bad / "blip.wav", "arctic-aew-e-missing": bad / "missing.wav",
               "arctic-aew-f-pipe-fails": "false |", "arctic-aew-g-pipe-silent": "true |",
               "arctic-aew-h-truncated": bad / "truncated.flac",
               "arctic-aew-i-nan": bad / "nan.wav"}
    for name in ("wav.scp", "utt2spk", "text"):
        lines = (data / name).read_text().splitlines()
        value = {"wav.scp": None, "utt2spk": "arctic-aew", "text": "SOME TEXT"}[name]
        lines += [f"{utt} {path if value is None else value}" for utt, path in entries.items()]
        (data / name).write_text("".join(f"{line}\n" for line in sorted(lines)))
    os.remove(data / "utt2dur")
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (data / "spk2utt").write_text(spk2utt)
    return data, entries


def test_skip_bad_lists_the_bad_and_keeps_the_rest(tmp_path, stage_env):
    data, entries = _with_bad_files(tmp_path)
    proc = run_stage(["--nj", 2, "--skip_bad", "true", data, tmp_path / "out"], stage_env)
    keys = [k for k, _ in load(tmp_path / "out" / "resemblyzer.scp")]
    assert keys == sorted(SHORT)
    bad = dict(read_pairs(tmp_path / "out" / "bad_utts"))
    assert sorted(bad) == sorted(entries)
    assert "cannot read audio" in bad["arctic-aew-b-corrupt"]
    assert "empty" in bad["arctic-aew-c-empty"]
    assert "too short: 0.050 s" in bad["arctic-aew-d-blip"]
    assert "no such file" in bad["arctic-aew-e-missing"]
    assert "exited with code 1" in bad["arctic-aew-f-pipe-fails"]
    assert "printed nothing" in bad["arctic-aew-g-pipe-silent"]
    assert "cannot read audio" in bad["arctic-aew-h-truncated"]
    assert "NaN or Inf" in bad["arctic-aew-i-nan"]
    assert "skipped 8 bad utterances" in proc.stdout


def test_without_skip_bad_the_first_bad_utterance_stops_the_stage(tmp_path, stage_env):
    data, entries = _with_bad_files(tmp_path)
    proc = run_stage(["--nj", 1, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode != 0
    first = "arctic-aew-b-corrupt"
    assert f"ERROR: utterance '{first}' ({entries[first]}): cannot read audio" in proc.stderr
    assert not (tmp_path / "out" / "resemblyzer.scp").exists()


@pytest.mark.kernels
def test_batch_seconds_does_not_change_outputs(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    runs = {}
    for seconds in (1, 30, 300):
        run_stage(["--nj", 1, "--batch_seconds", seconds, data, tmp_path / f"b{seconds}"],
                  stage_env)
        runs[seconds] = load(tmp_path / f"b{seconds}" / "resemblyzer.scp")
    for seconds in (1, 30):
        assert_equal_to_rounding(dict(runs[seconds]), dict(runs[300]),
                                 "the LSTM's products round by the number of partials batched")


def test_usage_and_missing_inputs(tmp_path, stage_env):
    proc = run_stage([tmp_path], stage_env, check=False)
    assert proc.returncode == 1 and "Usage:" in proc.stderr
    proc = run_stage([tmp_path / "nowhere", tmp_path / "out"], stage_env, check=False)
    assert proc.returncode == 1 and f"{tmp_path}/nowhere/wav.scp is missing" in proc.stderr


@pytest.mark.parametrize("script", ["extract_spk_embed.sh", "extract_ssl_feats.sh",
                                    "learn_kmeans.sh", "dump_tokens.sh"])
def test_a_python_without_speechdump_is_refused_naming_it(tmp_path, stage_env, script):
    python = tmp_path / "python"  # an interpreter whose `import speechdump` fails
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    args = {"learn_kmeans.sh": [data / "wav.scp", tmp_path / "km"],
            "dump_tokens.sh": [data / "wav.scp", tmp_path / "km", tmp_path / "out"]}
    proc = run_stage(["--python", python, *args.get(script, [data, tmp_path / "out"])],
                     stage_env, check=False, script=script)
    assert proc.returncode == 1
    assert f"'{python}' cannot import speechdump: source the recipe's path.sh" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "km").exists()


def test_recipe_runs_from_its_dir_with_outputs_anywhere(tmp_path, stage_env):
    recipe = REPO / "egs" / "sample_speakers" / "spk1"
    proc = subprocess.run(["./run.sh", "--nj", "2", "--datadir", str(tmp_path / "data"),
                           "--dumpdir", str(tmp_path / "dump")],
                          cwd=recipe, env=stage_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "dump" / "resemblyzer" / "sample"
    assert [k for k, _ in load(out / "resemblyzer.scp")] == TEXT_IDS
    assert len(load(out / "spk_resemblyzer.scp")) == 8
    assert "EER over all utterance pairs: 0.00 %" in proc.stdout
    assert (out / "report" / "resemblyzer.png").stat().st_size > 10_000
    assert "same-speaker cosine" in (out / "report" / "resemblyzer.txt").read_text()
    # Stage 5: trials of 1 s pieces, raw and AS-normalised against the other speakers.
    scores = tmp_path / "dump" / "resemblyzer" / "sample_pieces" / "scores"
    trials = (tmp_path / "data" / "sample_pieces" / "trials" / "sample_pieces").read_text()
    assert trials.count(" target\n") == 250 and trials.count(" nontarget\n") == 775
    for norm in ("none", "asnorm"):
        results = dict(line.split() for line in
                       (scores / f"sample_pieces.{norm}" / "results").read_text().splitlines())
        assert 0 < float(results["EER"]) < 20
        assert len((scores / f"sample_pieces.{norm}" / "scores").read_text().splitlines()) \
            == 1025
    assert "9 cohort embeddings (top 5)" in proc.stdout


@pytest.mark.parametrize("name", ["out$(touch PWNED)", "out;touch PWNED", "out`touch PWNED`",
                                  "it's", 'say"hi"'])
def test_paths_with_shell_syntax_are_refused_never_run(tmp_path, stage_env, name):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    proc = run_stage([data, tmp_path / name], stage_env, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "holds shell metacharacters" in proc.stderr
    assert not list(tmp_path.rglob("PWNED"))


def test_ids_and_paths_with_shell_syntax_in_the_data_dir_stay_text(tmp_path, stage_env):
    # An utterance id and a file path holding $(...), ; and quotes: read as data, never run.
    odd = tmp_path / "odd $(touch PWNED); 'q'"
    odd.mkdir()
    audio = REPO / "samples" / "real_speech" / "audio"
    shutil.copy(audio / "arctic-aew-a0001.wav", odd / "a.wav")
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    utt = "arctic-aew-$(touch${IFS}PWNED);'x'"
    for name, value in (("wav.scp", str(odd / "a.wav")), ("utt2spk", "arctic-aew"),
                        ("text", "HELLO")):
        lines = (data / name).read_text().splitlines() + [f"{utt} {value}"]
        (data / name).write_text("".join(f"{line}\n" for line in sorted(lines)))
    os.remove(data / "utt2dur")
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (data / "spk2utt").write_text(spk2utt)
    run_stage(["--nj", 2, data, tmp_path / "out"], stage_env, cwd=tmp_path)
    keys = [k for k, _ in load(tmp_path / "out" / "resemblyzer.scp")]
    assert utt in keys
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()


def test_a_device_that_is_not_there_fails_naming_it(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    proc = run_stage(["--device", "gpu", data, tmp_path / "bad"], stage_env, check=False)
    assert proc.returncode == 1
    assert "--device must be cpu, cuda or cuda:N, got 'gpu'" in proc.stderr
    # cuda:0 asks the launcher for no GPU: with none visible, every job says so, no traceback.
    env = dict(stage_env, CUDA_VISIBLE_DEVICES="")
    proc = run_stage(["--nj", 2, "--device", "cuda:0", data, tmp_path / "out"], env, check=False)
    assert proc.returncode != 0
    assert ("ERROR: --device cuda:0: no CUDA device is visible to this job "
            "(CUDA_VISIBLE_DEVICES=)") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "resemblyzer.scp").exists()
