"""--vad true on the speaker stage (scripts/extract_spk_embed.sh): each utterance cut to its
speech regions (Silero VAD, silero_vad's model and options), concatenated, before the speaker
extractor, as WeSpeaker's CLI does. Real utterances of four corpora padded with silence and
noise give the unpadded utterances' embeddings back; an utterance without speech is a bad
utterance; the VAD settings are part of each job's config; bad values are refused before any
job."""

import json
import re
import subprocess

import numpy as np
import pytest
import soundfile

from conftest import REPO, make_data_dir, read_pairs, run_feats_stage, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance

RATE = 16000
# One utterance of each of four corpora (ARCTIC, LJSpeech, LibriSpeech, VCTK), 1.6-7 s, with
# little pause inside: the VAD also drops pauses inside an utterance, which changes its embedding.
SPEECH = ["arctic-aew-a0001", "ljspeech-lj-002-0035", "ls-1998-15444-0001", "vctk-p225-003"]
NOISE = 0.01  # standard deviation of the white noise of the padding (-40 dBFS)
SILENT = "zz-noise-only"
COSINE = 0.99
SETTINGS = {"threshold": 0.5, "min_speech": 0.25, "min_silence": 0.1, "pad": 0.03}


def padding(rng, seconds=2.0, silence=0.5):
    """``seconds`` of padding: ``silence`` s of digital silence, then low white noise."""
    side = (NOISE * rng.standard_normal(int(RATE * seconds))).astype(np.float32)
    side[:int(RATE * silence)] = 0.0
    return side


def write_tables(data, tables):
    for name, table in tables.items():
        with open(data / name, "w", encoding="utf-8") as f:
            f.writelines(f"{key} {table[key]}\n" for key in sorted(table))
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (data / "spk2utt").write_text(spk2utt)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A data dir of each utterance of SPEECH as it is and as ``<utt>-padded`` (2 s of
    silence and noise on both sides, a 16 kHz float WAV), the speaker of both its own."""
    tmp = tmp_path_factory.mktemp("spk_vad")
    data = make_data_dir(tmp / "data", keep=set(SPEECH))
    wav = dict(read_pairs(data / "wav.scp"))
    spk = dict(read_pairs(data / "utt2spk"))
    rng = np.random.default_rng(26)
    (tmp / "padded").mkdir()
    for utt in SPEECH:
        speech = load_audio(Utterance(utt, wav[utt]), RATE, ResamplerCache())
        wave = np.concatenate([padding(rng), speech, padding(rng)[::-1]])
        path = tmp / "padded" / f"{utt}.wav"
        soundfile.write(path, wave, RATE, subtype="FLOAT")
        wav[f"{utt}-padded"], spk[f"{utt}-padded"] = path, spk[utt]
    for name in ("utt2dur", "text"):  # not every sample has a transcript: wav.scp is the list
        (data / name).unlink()
    write_tables(data, {"wav.scp": wav, "utt2spk": spk})
    return data


def embeddings(scp):
    import kaldiio

    return dict(kaldiio.load_scp_sequential(str(scp)))


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_vad_gives_the_unpadded_embedding_back_and_reruns_say_why(corpus, tmp_path, stage_env):
    out = tmp_path / "out"
    plain = run_stage(["--nj", 2, corpus, out], stage_env)
    assert "--vad" not in plain.stdout + plain.stderr
    without = embeddings(out / "resemblyzer.scp")
    assert "vad" not in json.loads((out / "split2" / "done.1").read_text())["config"]

    # The same out dir with --vad true: every job is redone, and the console says why.
    proc = run_stage(["--nj", 2, "--vad", "true", corpus, out], stage_env)
    console = proc.stdout + proc.stderr
    for job in (1, 2):
        assert re.search(rf"^job {job} ran: --vad false -> true \(--vad_threshold 0.5, "
                         r"--vad_min_speech 0.25, --vad_min_silence 0.1, --vad_pad 0.03\)$",
                         console, re.M), console
    trimmed = embeddings(out / "resemblyzer.scp")
    assert list(trimmed) == list(without)
    rows = []
    for utt in SPEECH:
        rows.append((utt, cosine(without[f"{utt}-padded"], without[utt]),
                     cosine(trimmed[f"{utt}-padded"], without[utt]),
                     cosine(trimmed[f"{utt}-padded"], trimmed[utt])))
    print("\nutterance: cosine to the unpadded one's embedding (no VAD) of the padded one "
          "without VAD, with --vad true; and with --vad true on both")
    for utt, before, after, both in rows:
        print(f"  {utt}: {before:.4f} -> {after:.4f}; {both:.4f}")
    for utt, before, after, both in rows:
        assert after >= COSINE, (utt, after)
        assert both >= COSINE, (utt, both)
        # The padding alone moves the embedding out of bounds: the test can fail.
        assert before < COSINE and before < after, (utt, before, after)

    # What the VAD did is in each job's record and log.
    done = [json.loads((out / "split2" / f"done.{job}").read_text()) for job in (1, 2)]
    for record in done:
        vad = record["config"]["vad"]
        assert {k: vad[k] for k in SETTINGS} == SETTINGS
        assert vad["model"]["silero-vad"] and len(vad["model"]["sha256"]) == 64
        assert 0 < record["speech_seconds"] < record["audio_seconds"]
    padded_seconds = 4 * len(SPEECH)  # at least the padding went
    removed = sum(r["audio_seconds"] - r["speech_seconds"] for r in done)
    assert removed > 0.8 * padded_seconds, removed
    log = (out / "log" / "extract.1.log").read_text()
    assert re.search(r"--vad true: [\d.]+ s of audio before trimming, [\d.]+ s of speech after: "
                     r"[\d.]+ s \([\d.]+%\) removed", log), log
    kept, total = (sum(r[k] for r in done) for k in ("speech_seconds", "audio_seconds"))
    assert f"--vad true: {kept:.1f} s of speech kept of {total:.1f} s of audio (" in proc.stdout
    # The merged record holds the VAD settings; utt2dur keeps the untrimmed durations.
    assert json.loads((out / "meta.json").read_text())["config"]["vad"] == done[0]["config"]["vad"]
    durations = {k: float(v) for k, v in read_pairs(out / "utt2dur")}
    assert durations["vctk-p225-003-padded"] == pytest.approx(durations["vctk-p225-003"] + 4, 1e-3)

    again = run_stage(["--nj", 2, "--vad", "true", corpus, out], stage_env)
    assert "all 2 jobs reused" in again.stdout + again.stderr
    other = run_stage(["--nj", 2, "--vad", "true", "--vad_threshold", 0.6, corpus, out], stage_env)
    assert re.search(r"^job 1 ran: --vad_threshold 0.5 -> 0.6$", other.stdout + other.stderr,
                     re.M), other.stdout + other.stderr
    off = run_stage(["--nj", 2, corpus, out], stage_env)
    assert re.search(r"^job 2 ran: --vad true -> false \(it trimmed with --vad_threshold 0.6, ",
                     off.stdout + off.stderr, re.M), off.stdout + off.stderr


@pytest.fixture
def with_noise_only(tmp_path):
    """Two utterances of SPEECH and one of faint noise and digital silence only."""
    keep = SPEECH[:2]
    data = make_data_dir(tmp_path / "data", keep=set(keep))
    rng = np.random.default_rng(7)
    noise = np.concatenate([np.zeros(RATE, np.float32), padding(rng, 3.0, 0.0)]) * 0.3
    path = tmp_path / f"{SILENT}.wav"
    soundfile.write(path, noise, RATE, subtype="FLOAT")
    tables = {name: dict(read_pairs(data / name)) for name in ("wav.scp", "utt2spk")}
    tables["wav.scp"][SILENT], tables["utt2spk"][SILENT] = path, SILENT
    for name in ("utt2dur", "text"):
        (data / name).unlink()
    write_tables(data, tables)
    return data, path


def test_an_utterance_without_speech_is_a_bad_utterance(with_noise_only, tmp_path, stage_env):
    data, path = with_noise_only
    out = tmp_path / "out"
    failed = run_stage(["--nj", 1, "--vad", "true", data, out], stage_env, check=False)
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    assert f"ERROR: utterance '{SILENT}' ({path}): no speech: Silero VAD found none" in console, \
        console
    assert "--skip_bad true" in console  # how to go on
    assert not (out / "resemblyzer.scp").exists()

    proc = run_stage(["--nj", 1, "--vad", "true", "--skip_bad", "true", data, out], stage_env)
    bad = dict(read_pairs(out / "bad_utts"))
    assert list(bad) == [SILENT] and "no speech" in bad[SILENT], bad
    assert list(embeddings(out / "resemblyzer.scp")) == SPEECH[:2]
    assert f"skipped 1 bad utterances: {SILENT}" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    # parse_options.sh checks true/false; the pre-flight every other value.
    (["--vad", "maybe"], "parse_options.sh: option --vad expects true or false, got 'maybe'"),
    (["--vad", "true", "--vad_threshold", "1.5"],
     "ERROR: --vad_threshold 1.5: must lie between 0 and 1"),
    (["--vad_threshold", "high"], "ERROR: --vad_threshold 'high': expected float"),
    (["--vad", "true", "--vad_min_speech", "-1"], "ERROR: --vad_min_speech -1: must be >= 0"),
    (["--vad", "true", "--vad_pad", "x"], "ERROR: --vad_pad 'x': expected float"),
])
def test_bad_vad_values_are_refused_before_any_job(args, message, tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep={SPEECH[0]})
    out = tmp_path / "out"
    proc = run_stage([*args, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    if message.startswith("ERROR"):
        assert "refused before any job: nothing was written" in proc.stderr
    assert not out.exists()


def test_vad_is_refused_on_the_features_stage(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep={SPEECH[0]})
    out = tmp_path / "out"
    proc = run_feats_stage(["--toolkit", "fbank", "--extractor_opts", "--vad true", data, out],
                           stage_env, check=False)
    assert proc.returncode == 1
    assert "ERROR: --vad true applies to the speaker stage" in proc.stderr, proc.stderr
    assert not out.exists()


def test_preflight_and_job_check_vad_against_the_streams(capsys):
    """check_extraction.py takes --vad on the speaker stage only; extract.py refuses it for a
    toolkit writing frames (its time axis would be cut)."""
    import importlib.util

    from speechdump.errors import OptionError
    from speechdump.extractors import check
    from speechdump.vad import check_trim

    spec = importlib.util.spec_from_file_location("check_extraction",
                                                  REPO / "pyscripts" / "check_extraction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--stage", "speaker", "--vad", "true", "--vad_pad", "0.1"]) == 0
    assert "--vad true: each utterance cut to its speech (Silero VAD, --vad_threshold 0.5, " \
           "--vad_min_speech 0.25, --vad_min_silence 0.1, --vad_pad 0.1)" in capsys.readouterr().out
    with pytest.raises(OptionError, match="applies to the speaker stage"):
        module.main(["--stage", "features", "--toolkit", "fbank", "--vad", "true"])
    _, streams = check("fbank", None, {})
    with pytest.raises(OptionError, match="frame-level output"):
        check_trim(SETTINGS, streams, "fbank")
    check_trim(None, streams, "fbank")


def silero_reference(wave):
    """WeSpeaker's way with silero_vad's own API: get_speech_timestamps on the 16 kHz wave,
    then the segments joined."""
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    model = silero_vad.load_silero_vad()
    stamps = silero_vad.get_speech_timestamps(torch.from_numpy(wave), model, sampling_rate=RATE)
    return np.array([[s["start"], s["end"]] for s in stamps]).reshape(-1, 2)


@pytest.mark.kernels
def test_trimmer_regions_are_silero_get_speech_timestamps_at_any_rate(corpus):
    """The trimmer's regions are silero's own get_speech_timestamps (within one 32 ms frame: the
    batched probabilities' rounding, test_vad.py); a waveform at another rate is cut at the
    same times, mapped to its samples."""
    import torch

    from speechdump.vad import SpeechTrimmer

    trimmer = SpeechTrimmer(SETTINGS)
    path = dict(read_pairs(corpus / "wav.scp"))["vctk-p225-003-padded"]
    wave = load_audio(Utterance("u", path), RATE, ResamplerCache())
    want = silero_reference(wave)
    got = trimmer.trim(wave, RATE)
    assert got.regions.shape == want.shape and np.abs(got.regions - want).max() <= 512
    np.testing.assert_array_equal(
        got.wave, np.concatenate([wave[s:e] for s, e in got.regions.tolist()]))
    resamplers = ResamplerCache()
    for rate in (8000, 24000, 48000):
        other = resamplers.resample(torch.from_numpy(wave), RATE, rate).numpy()
        trimmed = trimmer.trim(other, rate)
        # The VAD ran on the wave resampled to 16 kHz; its regions are mapped to the samples
        # at the wave's rate.
        back = resamplers.resample(torch.from_numpy(other), rate, RATE).numpy()
        at_16k = trimmer.vad.forward([back])[0].astype(np.int64)
        np.testing.assert_array_equal(trimmed.regions, np.rint(at_16k * rate / RATE), str(rate))
        assert len(trimmed.wave) == int((trimmed.regions[:, 1] - trimmed.regions[:, 0]).sum())
        if rate > RATE:  # the same audio (band-limited at 8 kHz): regions at the same times
            assert trimmed.regions.shape == want.shape, rate
            assert np.abs(trimmed.regions - want * rate / RATE).max() <= 2 * 512 * rate / RATE
    with pytest.raises(ValueError, match="no speech"):
        trimmer(np.zeros(2 * RATE, np.float32), RATE)
