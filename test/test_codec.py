"""Codec tokens (--toolkit codec: EnCodec, DAC, Mimi, X-Codec) and deduplicated units (--dedup
true, for codec and k-means tokens) on the real speech samples, against each model's own API."""

import math
import subprocess

import kaldiio
import numpy as np
import pytest
import torch
import torchaudio

from build_codec_models import KINDS, build
from conftest import (REPO, engine_outputs, make_data_dir, make_segments_data_dir, read_pairs,
                      run_feats_stage, run_stage)
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import read_utterances
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import get_class, load_extractor
from speechdump.extractors.codec import dedup_frames
from speechdump.kaldi_io import write_ark_scp

# Three recordings of 1.5 to 3.5 s, all of different lengths.
SUBSET = {"ljspeech-lj-002-0020", "ljspeech-lj-002-0035", "arctic-aew-a0003"}
# --extractor_opts per codec: EnCodec at 6 kbps (8 codebooks), DAC at 6 of its 12, X-Codec at
# 2 kbps (4 of its 8).
OPTS = {"encodec": "--bandwidth 6.0", "dac": "--codebooks 6", "mimi": "",
        "xcodec": "--bandwidth 2.0"}
BANDWIDTH = {"encodec": 6.0, "xcodec": 2.0}
CODEBOOKS = {"encodec": 8, "dac": 6, "mimi": 8, "xcodec": 4}
HOP = {"encodec": 320, "dac": 320, "mimi": 1920, "xcodec": 320}
RATE = {"encodec": 24000, "dac": 16000, "mimi": 24000, "xcodec": 16000}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("codecs")
    return {kind: build(base / kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def hf(models):
    from transformers import AutoFeatureExtractor, AutoModel

    return {kind: (AutoModel.from_pretrained(path).eval(),
                   AutoFeatureExtractor.from_pretrained(path)) for kind, path in models.items()}


@pytest.fixture(scope="module")
def codec_waves(utterances):
    """kind -> {utt id: the waveform at the codec's rate, as the engine resamples it}."""
    resamplers = ResamplerCache()
    return {kind: {u.utt_id: load_audio(u, RATE[kind], resamplers) for u in utterances}
            for kind in KINDS}


def own_encode(kind, model, inputs):
    """``model.encode`` of one prepared utterance with the options of OPTS."""
    if kind == "encodec":
        return model.encode(inputs["input_values"], inputs["padding_mask"],
                            bandwidth=BANDWIDTH[kind])
    if kind == "dac":
        return model.encode(inputs["input_values"], n_quantizers=CODEBOOKS[kind])
    if kind == "xcodec":
        return model.encode(inputs["input_values"], bandwidth=BANDWIDTH[kind])
    return model.encode(inputs["input_values"])


def reference(kind, hf, wave):
    """The model's own single-utterance ``encode`` (its feature extractor, then the model):
    [frames, codebooks]. EnCodec with one thread, as the extractor runs it (its latents round
    by thread count)."""
    model, fe = hf[kind]
    inputs = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if kind == "encodec" else threads)
    with torch.inference_mode():
        codes = own_encode(kind, model, inputs).audio_codes
    torch.set_num_threads(threads)
    return (codes[0] if kind == "encodec" else codes)[0].T.numpy()


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, models, stage_env):
    """kind -> {nj: out dir} of the feature stage with large batches."""
    base = tmp_path_factory.mktemp("codec_stage")
    data = make_data_dir(base / "data", keep=SUBSET)
    runs = {}
    for kind in KINDS:
        # Time: the jobs of DAC and X-Codec split and batch as Mimi's; they run --nj 2 only.
        for nj in (2, 1, 3) if kind in ("encodec", "mimi") else (2,):
            out = base / f"{kind}_nj{nj}"
            run_feats_stage(["--toolkit", "codec", "--model", models[kind], "--extractor_opts",
                             OPTS[kind], "--tag", "codes", "--nj", nj, "--batch_seconds", 300,
                             "--batch_size", 64, data, out], stage_env)
            runs.setdefault(kind, {})[nj] = out
    return data, runs


@pytest.mark.kernels
@pytest.mark.parametrize("kind", KINDS)
def test_stage_tokens_equal_the_models_own_encode(kind, stage_runs, hf, codec_waves):
    data, runs = stage_runs
    out = runs[kind][2]
    stored = dict(kaldiio.load_scp_sequential(str(out / "codes.scp")))
    assert list(stored) == [key for key, _ in read_pairs(data / "text")]
    frames = dict(read_pairs(out / "utt2num_frames"))
    for utt, codes in stored.items():
        wave = codec_waves[kind][utt]
        expected = math.ceil(len(wave) / HOP[kind])
        assert codes.dtype == np.int32 and codes.shape == (expected, CODEBOOKS[kind]), utt
        assert int(frames[utt]) == expected
        assert np.array_equal(codes, reference(kind, hf, wave)), utt  # every token
    # The Kaldi text form: frame-major, frames x codebooks tokens per line.
    text = [line.split() for line in (out / "codes").read_text().splitlines()]
    assert [(utt, [int(t) for t in toks]) for utt, *toks in text] == \
        [(utt, codes.reshape(-1).tolist()) for utt, codes in stored.items()]


@pytest.mark.kernels
@pytest.mark.parametrize("kind", ("encodec", "mimi"))
def test_jobs_do_not_change_tokens(kind, stage_runs):
    _, runs = stage_runs
    outs = [dict(kaldiio.load_scp_sequential(str(runs[kind][nj] / "codes.scp")))
            for nj in (1, 2, 3)]
    for other in outs[1:]:
        assert list(other) == list(outs[0])
        assert all(np.array_equal(other[u], outs[0][u]) for u in outs[0])
    assert (runs[kind][1] / "codes").read_text() == (runs[kind][3] / "codes").read_text()


@pytest.mark.parametrize("kind", ("dac", "mimi", "xcodec"))
def test_padding_changes_dac_mimi_xcodec_so_they_batch_equal_lengths(kind, hf, codec_waves):
    """Why DAC, Mimi and X-Codec are equal_lengths_only: a zero-padded batch changes codes."""
    model, fe = hf[kind]
    waves = [codec_waves[kind][u] for u in sorted(SUBSET)]
    inputs = fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt", padding=True)
    with torch.inference_mode():
        batch = model.encode(inputs["input_values"]).audio_codes
    changed = [not np.array_equal(batch[i, :, :len(ref)].T.numpy()[:, :len(ref[0])], ref)
               for i, ref in enumerate(reference(kind, hf, w) for w in waves)]
    assert any(changed)


@pytest.mark.kernels
@pytest.mark.parametrize("kind", ("dac", "mimi", "xcodec"))
def test_equal_length_segments_batch_exactly(kind, tmp_path, models, hf, codec_waves):
    """Fixed-length segments (2 s pieces) go through in real batches, each token as alone."""
    data = make_segments_data_dir(tmp_path / "data", 2.0)
    recordings = ("arctic-aew-a0001-", "vctk-p225-003-", "ls-1998-15444-0001-")
    utterances = [u for u in read_utterances(str(data / "wav.scp"), str(data / "segments"))
                  if u.utt_id.startswith(recordings)]
    extractor = load_extractor("codec", str(models[kind]), **(
        {"bandwidth": BANDWIDTH[kind]} if kind in BANDWIDTH else {"codebooks": CODEBOOKS[kind]}))
    sizes = []
    forward = extractor.forward
    extractor.forward = lambda batch: sizes.append(len(batch)) or forward(batch)
    out = engine_outputs(extractor, utterances)
    assert max(sizes) > 1 and len(out) == len(utterances)
    resamplers = ResamplerCache()
    for u in utterances:
        wave = load_audio(u, RATE[kind], resamplers)
        codes = reference(kind, hf, wave)
        assert np.array_equal(out[u.utt_id], codes[:, :CODEBOOKS[kind]]), u.utt_id


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_stored_tokens_is_the_models_round_trip(kind, stage_runs, hf, codec_waves):
    _, runs = stage_runs
    model, fe = hf[kind]
    utt = "ljspeech-lj-002-0020"
    codes = torch.from_numpy(
        dict(kaldiio.load_scp_sequential(str(runs[kind][2] / "codes.scp")))[utt].T.copy())
    inputs = fe(codec_waves[kind][utt], sampling_rate=fe.sampling_rate, return_tensors="pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the extractor runs EnCodec
    with torch.inference_mode():
        encoded = own_encode(kind, model, inputs)
        if kind == "encodec":
            trip = model.decode(encoded.audio_codes, encoded.audio_scales).audio_values
            stored = model.decode(codes.long()[None, None], [None]).audio_values
        elif kind == "dac":
            trip = model.decode(audio_codes=encoded.audio_codes).audio_values
            stored = model.decode(audio_codes=codes.long()[None]).audio_values
        else:
            trip = model.decode(encoded.audio_codes).audio_values
            stored = model.decode(codes.long()[None]).audio_values
    torch.set_num_threads(threads)
    assert stored.shape == trip.shape
    assert torch.equal(stored, trip)


def test_codec_dedup_reconstructs_the_frames(tmp_path, models, stage_runs, stage_env):
    """Mimi with its semantic codebook only (residual quantisation: the first codebook of all
    8): units and durations give every frame back."""
    data, runs = stage_runs
    out = tmp_path / "dedup"
    run_feats_stage(["--toolkit", "codec", "--model", models["mimi"], "--extractor_opts",
                     "--codebooks 1 --dedup true", "--tag", "codes", "--nj", 2, data, out],
                    stage_env)
    frames = {utt: codes[:, :1] for utt, codes in
              kaldiio.load_scp_sequential(str(runs["mimi"][2] / "codes.scp"))}
    units = dict(kaldiio.load_scp_sequential(str(out / "codes.scp")))
    durations = dict(kaldiio.load_scp_sequential(str(out / "codes_durations.scp")))
    assert list(units) == list(durations) == list(frames)
    collapsed = 0
    for utt, full in frames.items():
        assert durations[utt].dtype == np.int32 and durations[utt].min() >= 1
        assert np.array_equal(np.repeat(units[utt], durations[utt], axis=0), full), utt
        assert (units[utt][1:] != units[utt][:-1]).any(axis=1).all()  # runs fully collapsed
        collapsed += len(full) - len(units[utt])
    assert collapsed > 0
    counts = dict(read_pairs(out / "utt2num_frames"))
    assert all(int(counts[u]) == len(units[u]) for u in units)
    text = dict(line.split(" ", 1) for line in (out / "codes_durations").read_text().splitlines())
    assert all(text[u].split() == [str(d) for d in durations[u]] for u in durations)


def test_dedup_frames_on_matrices_and_vectors():
    frames = np.array([[1, 2], [1, 2], [1, 3], [1, 2], [1, 2], [1, 2]], dtype=np.int32)
    units, durations = dedup_frames(frames)
    assert units.tolist() == [[1, 2], [1, 3], [1, 2]] and durations.tolist() == [2, 1, 3]
    units, durations = dedup_frames(np.array([5, 5, 5, 0, 5]))
    assert units.tolist() == [5, 0, 5] and durations.tolist() == [3, 1, 1]
    units, durations = dedup_frames(np.zeros((0, 4), dtype=np.int32))
    assert units.shape == (0, 4) and durations.shape == (0,)


def test_kmeans_dedup_reconstructs_the_tokens(tmp_path, utterances, stage_env):
    resamplers = ResamplerCache()
    matrices = {}
    for u in utterances:
        if u.utt_id in SUBSET:
            wave = load_audio(u, 16000, resamplers)
            matrices[u.utt_id] = torchaudio.compliance.kaldi.fbank(
                torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=20,
                dither=0.0).numpy()
    scp = tmp_path / "feats.scp"
    write_ark_scp(str(tmp_path / "feats.ark"), str(scp), matrices)
    run_stage(["--n_clusters", 6, "--portion", 1, scp, tmp_path / "km"], stage_env,
              script="learn_kmeans.sh")
    run_stage(["--nj", 2, scp, tmp_path / "km", tmp_path / "plain"], stage_env,
              script="dump_tokens.sh")
    run_stage(["--nj", 2, "--dedup", "true", scp, tmp_path / "km", tmp_path / "dedup"],
              stage_env, script="dump_tokens.sh")
    tokens = dict(kaldiio.load_scp_sequential(str(tmp_path / "plain" / "tokens.scp")))
    units = dict(kaldiio.load_scp_sequential(str(tmp_path / "dedup" / "tokens.scp")))
    durations = dict(kaldiio.load_scp_sequential(
        str(tmp_path / "dedup" / "tokens_durations.scp")))
    assert list(units) == list(durations) == list(tokens) == list(matrices)
    for utt, full in tokens.items():
        assert len(full) == len(matrices[utt])
        assert np.array_equal(np.repeat(units[utt], durations[utt]), full), utt
        assert (units[utt][1:] != units[utt][:-1]).all() and len(units[utt]) < len(full)
    text = [line.split() for line in (tmp_path / "dedup" / "tokens").read_text().splitlines()]
    assert [(u, [int(t) for t in toks]) for u, *toks in text] == \
        [(u, x.tolist()) for u, x in units.items()]


def test_options_and_models_are_checked_before_loading(tmp_path, models):
    cls = get_class("codec")
    defaults = {o.name: o.default for o in cls.options}
    streams = cls.check(str(models["encodec"]), dict(defaults, bandwidth=1.5))
    assert [(s.name, s.kind, s.dim) for s in streams] == [("", "int", 2)]
    streams = cls.check(str(models["dac"]), dict(defaults, dedup=True))
    assert [(s.name, s.dim) for s in streams] == [("", 12), ("durations", None)]
    with pytest.raises(OptionError, match="--bandwidth 5.0: this EnCodec has 1.5, 3.0, 6.0"):
        cls.check(str(models["encodec"]), dict(defaults, bandwidth=5.0))
    with pytest.raises(OptionError, match="--codebooks 13: this dac has 12 codebooks"):
        cls.check(str(models["dac"]), dict(defaults, codebooks=13))
    with pytest.raises(OptionError, match="EnCodec takes --bandwidth"):
        cls.check(str(models["encodec"]), dict(defaults, codebooks=2))
    with pytest.raises(ModelError, match="has no config.json"):
        cls.check(str(tmp_path), defaults)
    # X-Codec: 0.5 kbps a codebook (1024 codes at 50 Hz), its highest bandwidth by default.
    assert cls.check(str(models["xcodec"]), defaults)[0].dim == 8
    assert cls.check(str(models["xcodec"]), dict(defaults, bandwidth=1.5))[0].dim == 3
    with pytest.raises(OptionError, match=r"--bandwidth 3.0: this X-Codec has 0.5, 1.0, 1.5, "
                                          r"2.0, 4.0 \(its target_bandwidths\)"):
        cls.check(str(models["xcodec"]), dict(defaults, bandwidth=3.0))
    with pytest.raises(OptionError, match="X-Codec takes --bandwidth"):
        cls.check(str(models["xcodec"]), dict(defaults, codebooks=2))


def test_xcodec_frames_are_ceil_samples_over_hop(models, hf):
    """X-Codec's frames come from two encoders (DAC's convolutions; the semantic model's, 400
    samples wide at stride 320 on the input padded by 160 a side) that agree only on a multiple
    of the hop, which the feature extractor pads to: ceil(samples / 320) frames, each token as
    the model's own, at the lengths around a frame boundary."""
    extractor = load_extractor("codec", str(models["xcodec"]), bandwidth=BANDWIDTH["xcodec"])
    rng = np.random.default_rng(0)
    for samples in (320, 321, 639, 640, 4801):
        wave = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        [codes] = extractor.forward([extractor.prepare(wave)])
        assert codes.shape == (math.ceil(samples / 320), CODEBOOKS["xcodec"]), samples
        assert np.array_equal(codes, reference("xcodec", hf, wave)), samples


def test_codec1_recipe_end_to_end(tmp_path, models, stage_env):
    """egs/sample_speakers/codec1 with a local Mimi, --nj 2: every utterance of the corpus, in
    the order of its text, as int32 matrices and their frame-major Kaldi text."""
    sample = REPO / "egs" / "sample_speakers" / "codec1"
    proc = subprocess.run(["./run.sh", "--datadir", str(tmp_path / "data"), "--dumpdir",
                           str(tmp_path / "dump"), "--model", str(models["mimi"]),
                           "--extractor_opts", "--codebooks 4"], cwd=sample, env=stage_env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "dump" / "codec" / "sample"
    text_ids = [k for k, _ in read_pairs(REPO / "samples" / "real_speech" / "text")]
    stored = dict(kaldiio.load_scp_sequential(str(out / "codec.scp")))
    assert list(stored) == text_ids
    durations = dict(read_pairs(REPO / "samples" / "real_speech" / "utt2dur"))
    lines = [line.split() for line in (out / "codec").read_text().splitlines()]
    for (utt, *tokens), (key, codes) in zip(lines, stored.items()):
        assert utt == key and codes.dtype == np.int32 and codes.shape[1] == 4
        assert abs(len(codes) - float(durations[utt]) * 12.5) <= 1  # 12.5 Hz
        assert [int(t) for t in tokens] == codes.reshape(-1).tolist()
