"""Silero VAD (--toolkit silero_vad, scripts/compute_vad.sh) on real speech with silence and
noise around it: the batched engine's regions against silero's own get_speech_timestamps on
each file alone, the stage end to end, an utterance without speech, the thresholds in the job
records, and the model loaded from the wheel with no network."""

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile
import torch

from conftest import REPO, make_data_dir, read_pairs, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance

RATE = 16000
FRAME = 512  # silero's step at 16 kHz: 32 ms
# LibriSpeech-free picks of several corpora and rates (16-48 kHz), 1.5-11 s; jfk has pauses.
SPEECH = ["arctic-aew-a0001", "jfk-inaugural1961", "ljspeech-lj-002-0020", "vctk-p225-003"]
SILENT = "zz-silence"
# Not silero's defaults, so that each option has to reach it.
OPTIONS = dict(threshold=0.6, min_speech=0.2, min_silence=0.15, pad=0.05)


def silero():
    """silero_vad's own API; its import sets torch's thread count to 1, undone here."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


def padded_speech(data_dir, tmp_path):
    """The real speech of SPEECH, each with 1-2 s of low-level noise (and a stretch of digital
    silence) before and after it, as 16 kHz float WAV files, plus 3 s of faint noise alone;
    returns {utt: waveform as written}."""
    rng = np.random.default_rng(26)
    audio = tmp_path / "padded"
    audio.mkdir()
    sources = dict(read_pairs(data_dir / "wav.scp"))
    waves = {}
    for utt in SPEECH:
        speech = load_audio(Utterance(utt, sources[utt]), RATE, ResamplerCache())
        sides = []
        for _ in range(2):
            noise = 0.003 * rng.standard_normal(int(RATE * rng.uniform(1.0, 2.0)))
            noise[:int(RATE * 0.3)] = 0.0
            sides.append(noise.astype(np.float32))
        waves[utt] = np.concatenate([sides[0], speech, sides[1][::-1]]).astype(np.float32)
    waves[SILENT] = (1e-4 * rng.standard_normal(3 * RATE)).astype(np.float32)
    for utt, wave in waves.items():
        soundfile.write(audio / f"{utt}.wav", wave, RATE, subtype="FLOAT")
    with open(data_dir / "wav.scp", "w") as f:
        f.writelines(f"{utt} {audio / utt}.wav\n" for utt in sorted(waves))
    for name in ("utt2spk", "text"):
        table = dict(read_pairs(data_dir / name))
        table[SILENT] = "silence" if name == "utt2spk" else "NOTHING"
        with open(data_dir / name, "w") as f:
            f.writelines(f"{u} {table[u]}\n" for u in sorted(waves))
    spk = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data_dir / "utt2spk")],
                         check=True, capture_output=True, text=True).stdout
    (data_dir / "spk2utt").write_text("".join(sorted(spk.splitlines(keepends=True))))
    (data_dir / "utt2dur").unlink()
    return waves


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vad")
    data = make_data_dir(tmp_path / "data", keep=set(SPEECH))
    return data, padded_speech(data, tmp_path)


def regions_of(timestamps):
    return np.array([[r["start"], r["end"]] for r in timestamps], dtype=np.int64).reshape(-1, 2)


def test_engine_regions_equal_silero_get_speech_timestamps_on_each_file(corpus):
    from conftest import engine_outputs
    from speechdump.extractors import load_extractor

    data, waves = corpus
    extractor = load_extractor("silero_vad", **OPTIONS)
    utts = [Utterance(utt, f"{data.parent}/padded/{utt}.wav") for utt in sorted(waves)]
    # One batch of all five through the engine: chunks of every utterance stacked.
    got = engine_outputs(extractor, utts)
    api = silero()
    with warnings.catch_warnings():  # its importlib.resources.path call is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model = api.load_silero_vad()
    worst = 0
    for utt in sorted(waves):
        wave, _ = soundfile.read(f"{data.parent}/padded/{utt}.wav", dtype="float32")
        want = regions_of(api.get_speech_timestamps(
            torch.from_numpy(wave), model, threshold=0.6, sampling_rate=RATE,
            min_speech_duration_ms=200, min_silence_duration_ms=150, speech_pad_ms=50))
        assert got[utt].dtype == np.int32 and got[utt].shape == want.shape, (utt, got[utt], want)
        if len(want):
            worst = max(worst, int(np.abs(got[utt] - want).max()))
    print(f"largest boundary difference from get_speech_timestamps: {worst} samples")
    assert worst <= FRAME
    assert len(got[SILENT]) == 0
    assert all(len(got[utt]) for utt in SPEECH)
    assert len(got["jfk-inaugural1961"]) > 1  # its pauses split it


def read_segments(path):
    return {u: (r, float(s), float(e)) for u, (r, s, e) in
            ((u, rest.split()) for u, rest in read_pairs(path))}


def test_the_stage_writes_segments_a_data_dir_and_speech_ratios(corpus, tmp_path, stage_env):
    data, waves = corpus
    out = tmp_path / "vad"
    args = ["--nj", 2, "--threshold", OPTIONS["threshold"], "--min_speech", OPTIONS["min_speech"],
            "--min_silence", OPTIONS["min_silence"], "--pad", OPTIONS["pad"], data, out]
    refused = run_stage(["--nj", 2, data, data.parent], stage_env, check=False,
                        script="compute_vad.sh")
    assert refused.returncode == 1 and "is the input data dir" in refused.stderr
    proc = run_stage(args, stage_env, script="compute_vad.sh")
    console = proc.stdout + proc.stderr
    assert re.search(rf"no speech found in 1 utterances .*: {SILENT}$", console, re.M), console

    import kaldiio

    regions = dict(kaldiio.load_scp_sequential(str(out / "vad.scp")))
    assert list(regions) == sorted(waves)
    segments = read_segments(out / "segments")
    assert list(segments) == sorted(segments)  # LC_ALL=C order
    want = {}
    for utt, ranges in regions.items():
        for start, end in ranges:
            region = f"{utt}-{round(start / 16):07d}-{round(end / 16):07d}"
            want[region] = (utt, start / RATE, end / RATE)
    assert set(segments) == set(want)
    for region, (reco, start, end) in segments.items():
        assert reco == want[region][0]
        assert abs(start - want[region][1]) < 1e-9 and abs(end - want[region][2]) < 1e-9

    # Ratios: speech seconds of the segments over each utterance's duration.
    ratios = {u: float(r) for u, r in read_pairs(out / "utt2speech_ratio")}
    assert list(ratios) == sorted(waves)
    for utt, ratio in ratios.items():
        speech = sum(e - s for u, (r, s, e) in segments.items() if r == utt)
        assert ratio == pytest.approx(speech / (len(waves[utt]) / RATE), abs=1e-4), utt
        assert 0 < ratio < 1 if utt != SILENT else ratio == 0
    assert SILENT not in {r for r, _, _ in segments.values()}

    new = out / "data"
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-text", str(new)], env=stage_env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert read_segments(new / "segments") == segments
    spk = dict(read_pairs(data / "utt2spk"))
    assert dict(read_pairs(new / "utt2spk")) == {r: spk[u] for r, (u, _, _) in want.items()}
    # no text: a region's words are not known (the console says so)
    assert (data / "text").exists() and not (new / "text").exists()
    assert f"{out}/data has no text" in console
    recordings = dict(read_pairs(data / "wav.scp"))
    assert dict(read_pairs(new / "wav.scp")) == {u: recordings[u] for u in SPEECH}

    # The options are in every job's record: the same run reuses the jobs, another threshold
    # redoes them and says why.
    for job in (1, 2):
        with open(out / "split2" / f"done.{job}") as f:
            options = json.load(f)["config"]["options"]
        assert {k: options[k] for k in OPTIONS} == OPTIONS
    again = run_stage(args, stage_env, script="compute_vad.sh")
    assert "all 2 jobs reused" in again.stdout + again.stderr
    args[3] = 0.8
    other = run_stage(args, stage_env, script="compute_vad.sh")
    assert re.search(r"job 1 ran: .*threshold", other.stdout + other.stderr), other.stderr
    assert re.search(r"job 2 ran: .*threshold", other.stdout + other.stderr), other.stderr
    with open(out / "split2" / "done.1") as f:
        assert json.load(f)["config"]["options"]["threshold"] == 0.8


def test_silero_vad_loads_its_model_from_the_wheel_with_no_network(tmp_path):
    """In a process whose sockets cannot connect and whose hub caches point nowhere, the
    extractor (and silero's own loader) load the model file that the installed silero-vad
    distribution lists, inside its package."""
    code = r"""
import importlib.metadata, os, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network blocked by test_vad")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import numpy as np, torch
from speechdump.extractors import get_class, load_extractor
extractor = load_extractor("silero_vad")
[path] = get_class("silero_vad").model_files(None)
import silero_vad
package = os.path.dirname(silero_vad.__file__)
files = [str(f.locate()) for f in importlib.metadata.files("silero-vad")]
print(importlib.metadata.version("silero-vad"))
print(os.path.realpath(path).startswith(os.path.realpath(package) + os.sep))
print(os.path.realpath(path) in map(os.path.realpath, files))
silero_vad.load_silero_vad()
out = extractor.forward([np.zeros(16000, dtype=np.float32)])
print(out[0].shape)
"""
    nowhere = str(tmp_path / "nowhere")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=nowhere,
               TORCH_HOME=nowhere, XDG_CACHE_HOME=nowhere, http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, inside, listed, shape = proc.stdout.split("\n")[:4]
    pinned = [line for line in open(REPO / "tools" / "requirements.txt")
              if line.startswith("silero-vad==")]
    assert pinned == [f"silero-vad=={version}\n"]
    assert (inside, listed, shape) == ("True", "True", "(0, 2)")
    assert not os.path.exists(nowhere)  # nothing was cached or downloaded


def test_regions_of_segments_are_placed_in_their_recordings(tmp_path, stage_env):
    """A data dir with segments: a region's segments line is offset by its utterance's start
    in the recording; an utterance without a region is left out of the new data dir."""
    from speechdump.errors import DataDirError
    from speechdump.vad import write_outputs

    data = tmp_path / "data"
    data.mkdir()
    tables = {"wav.scp": ["rec1 /corpus/rec1.flac"],
              "segments": ["spk1-a rec1 10.25 19.75", "spk1-b rec1 30 40"],
              "utt2spk": ["spk1-a spk1", "spk1-b spk1"], "spk2utt": ["spk1 spk1-a spk1-b"],
              "text": ["spk1-a HELLO THERE", "spk1-b NOTHING"]}
    for name, lines in tables.items():
        (data / name).write_text("".join(f"{line}\n" for line in lines))
    regions = {"spk1-a": np.array([[1600, 3208], [8000, 152000]], dtype=np.int32),
               "spk1-b": np.zeros((0, 2), dtype=np.int32)}
    with pytest.raises(DataDirError, match="would overwrite"):
        write_outputs(regions, {}, str(data), str(tmp_path))
    out = tmp_path / "out"
    out.mkdir()
    summary = write_outputs(regions, {"spk1-a": 9.5, "spk1-b": 10.0}, str(data), str(out))
    assert (summary.regions, summary.no_speech, summary.split) == (2, ["spk1-b"], ["spk1-a"])
    assert (out / "segments").read_text() == (
        "spk1-a-0000100-0000200 rec1 10.35 10.4505\n"
        "spk1-a-0000500-0009500 rec1 10.75 19.75\n")
    ratios = dict(read_pairs(out / "utt2speech_ratio"))
    assert ratios == {"spk1-a": f"{(1608 + 144000) / 16000 / 9.5:.4f}", "spk1-b": "0.0000"}
    new = out / "data"
    assert (new / "wav.scp").read_text() == "rec1 /corpus/rec1.flac\n"
    assert not (new / "text").exists()
    assert (new / "spk2utt").read_text() == \
        "spk1 spk1-a-0000100-0000200 spk1-a-0000500-0009500\n"
    assert (new / "utt2dur").read_text() == ("spk1-a-0000100-0000200 0.1005\n"
                                             "spk1-a-0000500-0009500 9\n")
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-text", str(new)], env=stage_env, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
