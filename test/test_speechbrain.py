"""Fidelity of the batched SpeechBrain extractor to SpeechBrain's own single-utterance API.

Small random-init models of the real architectures (test/build_speechbrain_model.py) loaded
through ``EncoderClassifier.from_hparams``; the reference gets the very waveform speechdump
decodes and resamples, so only the batching differs.
"""

import shutil

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.inference.speaker import EncoderClassifier

from build_speechbrain_model import build
from conftest import SAMPLES
from speechdump import engine
from speechdump.audio import ResamplerCache, UtteranceError, load_audio
from speechdump.data import Utterance
from speechdump.extractors import load_extractor

BATCH_SECONDS = (1, 30, 300)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=["ecapa", "xvector"])
def model(request, tmp_path_factory):
    return request.param, str(build(tmp_path_factory.mktemp("sb") / request.param, request.param))


@pytest.fixture(scope="module")
def runs(model, sample_utterances):
    """batch_seconds -> {utt: vector}: every sample utterance through the engine."""
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    extractor = load_extractor("speechbrain", model[1])
    assert extractor.max_batch_size == 1  # on CPU utterances go alone by default...
    extractor.max_batch_size = None  # ...batching is what these tests are about
    out = {}
    for seconds in BATCH_SECONDS:
        out[seconds] = {}
        engine.run(utterances, extractor, out[seconds].__setitem__,
                   engine.EngineOptions(batch_seconds=seconds, num_workers=2, progress=False))
    return out


@pytest.fixture(scope="module")
def reference(model, sample_utterances):
    classifier = EncoderClassifier.from_hparams(source=model[1], run_opts={"device": "cpu"})
    resamplers = ResamplerCache()
    out = {}
    with torch.inference_mode():
        for utt, path in sample_utterances:
            wave = load_audio(Utterance(utt, path), 16000, resamplers)
            # The x-vector's statistics pooling adds fresh random noise (1e-5..9e-5) to its
            # means on every call; the extractor pins it to this draw.
            torch.manual_seed(0)
            out[utt] = classifier.encode_batch(torch.from_numpy(wave)[None]).reshape(-1).numpy()
    return out


@pytest.mark.kernels
def test_big_batches_match_single_utterance_encode_batch(model, runs, reference,
                                                          sample_utterances):
    assert len(reference) == 26
    assert len({soundfile.info(path).samplerate for _, path in sample_utterances}) == 5
    batched = runs[300]
    dim = {"ecapa": 192, "xvector": 512}[model[0]]
    cosines = {utt: cosine(batched[utt], reference[utt]) for utt in reference}
    worst = min(cosines, key=cosines.get)
    max_abs = max(np.abs(batched[u] - reference[u]).max() for u in reference)
    norm = np.mean([np.linalg.norm(v) for v in reference.values()])
    between = [cosine(reference[a], reference[b]) for a in reference for b in reference if a < b]
    print(f"\n{model[0]}, batch_seconds=300: worst cosine {cosines[worst]:.8f} ({worst}), "
          f"max abs difference {max_abs:.2e} (mean norm {norm:.1f}); "
          f"cosine between different utterances: mean {np.mean(between):.4f}")
    for utt in reference:
        assert batched[utt].shape == (dim,) and batched[utt].dtype == np.float32
        assert cosines[utt] >= 0.9999, utt
    # The 0.9999 bar means something: distinct utterances stay well below it.
    assert np.mean(between) < 0.99


@pytest.mark.kernels
def test_batch_size_does_not_change_embeddings(model, runs):
    # 1 s: every utterance alone; 30 s and 300 s: length-sorted padded batches. Relative to
    # each vector's largest component, since a random-init model's scale is arbitrary.
    for seconds in BATCH_SECONDS[:-1]:
        worst = 0.0
        for utt, vector in runs[300].items():
            scale = np.abs(vector).max()
            worst = max(worst, np.abs(runs[seconds][utt] - vector).max() / scale)
        print(f"\n{model[0]}: batch_seconds={seconds} vs 300: max abs difference / max |v| "
              f"{worst:.2e}")
        assert worst <= 1e-5


def test_speech_shorter_than_the_model_needs_is_refused(model, tmp_path):
    samples, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="float32")
    path = tmp_path / "blip.wav"
    soundfile.write(path, samples[:800], rate)  # 0.05 s
    with pytest.raises(UtteranceError, match="'blip'.*too short: 0.050 s"):
        engine.run([Utterance("blip", str(path))], load_extractor("speechbrain", model[1]),
                   lambda *_: None, engine.EngineOptions(progress=False))


def test_a_moved_model_dir_loads_its_own_files_and_gets_nothing_written(model, tmp_path):
    # hyperparams.yaml names the directory it was built in as pretrained_path (as hub repos
    # name themselves); a copy elsewhere must still load, from itself, writing nothing there.
    moved = tmp_path / "moved"
    shutil.copytree(model[1], moved)
    shutil.move(model[1], tmp_path / "gone")
    try:
        before = sorted(p.name for p in moved.iterdir())
        extractor = load_extractor("speechbrain", str(moved))
        assert sorted(p.name for p in moved.iterdir()) == before
        wave = load_audio(Utterance("a", str(SAMPLES / "audio" / "arctic-aew-a0001.wav")),
                          extractor.sample_rate, ResamplerCache())
        assert extractor.forward([extractor.prepare(wave)])[0].shape[0] > 0
    finally:
        shutil.move(tmp_path / "gone", model[1])


def test_a_model_is_required():
    with pytest.raises(ValueError, match="speechbrain needs --model"):
        load_extractor("speechbrain")
    with pytest.raises(ValueError, match="not a directory"):
        load_extractor("speechbrain", "./no/such/model")
