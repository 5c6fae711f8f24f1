"""x-vector heads (--toolkit xvector) against transformers' own single-utterance API.

Small random-init ``WavLMForXVector`` / ``UniSpeechSatForXVector`` / ``Wav2Vec2ForXVector``
(test/build_hf_models.py), in the group-norm (base) or layer-norm (large) layout. The reference
is ``model(**Wav2Vec2FeatureExtractor(wave)).embeddings`` for one utterance at a time, on the
waveform speechdump decodes.
"""

import kaldiio
import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioXVector
from transformers.utils import logging as hf_logging

from build_hf_models import build_xvector
from conftest import assert_equal_to_rounding, engine_outputs, make_data_dir, read_pairs, run_stage
from speechdump.extractors import check, load_extractor

hf_logging.disable_progress_bar()

RATE = 16000
SUBSET = {"arctic-aew-a0001", "arctic-aew-a0003", "ljspeech-lj-002-0020", "vctk-p225-003",
          "vctk-p226-008", "vctk-p238-165"}  # 5 speakers, 3 rates, 1.5-6.8 s
# For the engine: 10 recordings, 1.5-11 s, 16-48 kHz, WAV/FLAC/MP3.
ENGINE = SUBSET | {"jfk-inaugural1961", "ls-1688-142285-0003", "ls-6829-rtvc00000",
                   "vctk-p301-102"}
MODELS = [("wavlm", "group"), ("unispeech-sat", "layer"), ("wav2vec2", "group")]


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: "-".join(m))
def model(request, tmp_path_factory):
    kind, norm = request.param
    return str(build_xvector(tmp_path_factory.mktemp("xvector") / kind, kind, norm,
                             seed=MODELS.index(request.param)))


@pytest.fixture(scope="module")
def hf(model):
    return (AutoModelForAudioXVector.from_pretrained(model).eval(),
            AutoFeatureExtractor.from_pretrained(model))


@pytest.fixture(scope="module")
def waves(utterances):
    """The ENGINE recordings only, as speechdump decodes them (16 kHz): less to decode than
    conftest's 26."""
    from speechdump.audio import ResamplerCache, load_audio

    cache = ResamplerCache()
    return {u.utt_id: load_audio(u, RATE, cache) for u in utterances if u.utt_id in ENGINE}


@pytest.fixture(scope="module")
def reference(hf, waves):
    net, fe = hf
    with torch.inference_mode():
        return {utt: net(**fe(waves[utt], sampling_rate=RATE, return_tensors="pt"))
                .embeddings[0].numpy() for utt in sorted(ENGINE)}


@pytest.mark.kernels
def test_padded_batches_equal_each_utterance_alone(model, hf, reference, utterances, waves):
    utterances = [u for u in utterances if u.utt_id in ENGINE]
    extractor = load_extractor("xvector", model)
    lengths = []
    forward = extractor.forward

    def recording(batch):
        lengths.append({len(x) for x in batch})
        return forward(batch)

    extractor.forward = recording
    out = engine_outputs(extractor, utterances, batch_seconds=1000)
    assert max(len(sizes) for sizes in lengths) > 1  # items of different lengths, padded
    assert all(v.shape == (32,) and v.dtype == np.float32 for v in out.values())
    assert sorted(out) == sorted(ENGINE)
    assert max(float(np.abs(out[u] - reference[u]).max()) for u in ENGINE) <= 1e-4
    # What the patches (speechdump/compat.py) fix: transformers' own padded batch, with the
    # attention mask, pools frames computed from the padding.
    net, fe = hf
    utts = sorted(SUBSET)
    inputs = fe([waves[u] for u in utts], sampling_rate=RATE, return_tensors="pt", padding=True,
                return_attention_mask=True)
    with torch.inference_mode():
        plain = net(**inputs).embeddings.numpy()
    assert max(float(np.abs(p - reference[u]).max()) for p, u in zip(plain, utts)) > 1e-3


@pytest.mark.kernels
@pytest.mark.parametrize("model", [MODELS[0]], indirect=True, ids=["wavlm-group"])
def test_speaker_stage_equals_the_model_alone_and_does_not_depend_on_nj(
        tmp_path, stage_env, model, reference):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    runs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        proc = run_stage(["--nj", nj, "--toolkit", "xvector", "--model", model,
                          "--batch_seconds", 1000, "--batch_size", 64, data, out], stage_env)
        assert f"xvector: {len(SUBSET)} utterances, 5 speakers" in proc.stdout
        runs[nj] = [dict(kaldiio.load_scp_sequential(str(out / name)))
                    for name in ("xvector.scp", "spk_xvector.scp")]
    utts, spks = runs[3]
    assert list(utts) == sorted(SUBSET) and len(spks) == 5
    assert max(float(np.abs(utts[u] - reference[u]).max()) for u in SUBSET) <= 1e-4
    speakers = dict(read_pairs(data / "utt2spk"))
    for spk, vector in spks.items():
        mean = np.mean([utts[u] for u in SUBSET if speakers[u] == spk], axis=0)
        assert np.abs(vector - mean / np.linalg.norm(mean)).max() <= 1e-5  # length-normalised
    for one, three in zip(runs[1], runs[3]):
        assert_equal_to_rounding(three, one, "the jobs' sort windows follow the split, so "
                                 "--nj 3 pads other batches than --nj 1")


@pytest.mark.parametrize("model", [MODELS[0]], indirect=True, ids=["wavlm-group"])
def test_preflight_and_shortest_input(model, tmp_path):
    _, streams = check("xvector", model, {})
    assert [(s.name, s.kind, s.shape, s.dim) for s in streams] == [("", "float", "vector", 32)]
    extractor = load_extractor("xvector", model)
    # Two TDNN frames for the standard deviation: 2 + 4 + 2*2 + 2*3 encoder frames.
    assert extractor.min_seconds == (400 + 15 * 320) / RATE
    noise = np.random.default_rng(0).standard_normal(5200).astype(np.float32)
    assert np.isfinite(extractor.forward([extractor.prepare(noise)])[0]).all()
