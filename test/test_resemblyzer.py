"""Fidelity of the batched Resemblyzer extractor to Resemblyzer's own single-utterance API."""

import numpy as np
import pytest
import soundfile
from resemblyzer import VoiceEncoder, preprocess_wav

from conftest import SAMPLES
from speechdump import engine
from speechdump.audio import UtteranceError
from speechdump.data import Utterance
from speechdump.extractors import load_extractor


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def batched(sample_utterances):
    """Every sample utterance through the engine in large batches."""
    out = {}
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    extractor = load_extractor("resemblyzer")
    engine.run(utterances, extractor, out.__setitem__,
               engine.EngineOptions(batch_seconds=300, num_workers=4, progress=False))
    return out


@pytest.fixture(scope="module")
def reference(sample_utterances):
    encoder = VoiceEncoder("cpu", verbose=False)
    return {utt: encoder.embed_utterance(preprocess_wav(path)) for utt, path in sample_utterances}


@pytest.mark.kernels
def test_16khz_input_matches_resemblyzer(batched, reference, sample_utterances):
    native = [utt for utt, path in sample_utterances if soundfile.info(path).samplerate == 16000]
    assert len(native) == 19
    for utt in native:
        assert batched[utt].shape == (256,)
        assert cosine(batched[utt], reference[utt]) >= 0.9999, utt
        assert np.abs(batched[utt] - reference[utt]).max() < 1e-5, utt


@pytest.mark.kernels
def test_other_rates_differ_only_by_the_resampler(batched, reference, sample_utterances):
    # Resemblyzer resamples with librosa (soxr), speechdump with a Kaiser-windowed sinc in
    # torchaudio; the two filters differ slightly near the cut-off. Measured here: cosine >= 0.9999.
    other = {utt: soundfile.info(path).samplerate for utt, path in sample_utterances
             if soundfile.info(path).samplerate != 16000}
    assert sorted(set(other.values())) == [22050, 24000, 44100, 48000]
    worst = min(cosine(batched[u], reference[u]) for u in other)
    print(f"lowest cosine to Resemblyzer over {len(other)} resampled utterances: {worst:.6f}")
    assert worst >= 0.9995


@pytest.mark.kernels
def test_batch_composition_does_not_change_embeddings(batched, sample_utterances):
    utterances = [Utterance(utt, path) for utt, path in sample_utterances[:6]]
    extractor = load_extractor("resemblyzer")
    one_by_one = {}
    engine.run(utterances, extractor, one_by_one.__setitem__,
               engine.EngineOptions(batch_seconds=0.1, num_workers=1, progress=False))
    for utt, vector in one_by_one.items():
        np.testing.assert_allclose(vector, batched[utt], atol=1e-6)


def test_speech_shorter_than_the_model_needs_is_refused(tmp_path):
    samples, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="float32")
    path = tmp_path / "blip.wav"
    soundfile.write(path, samples[:800], rate)  # 0.05 s
    with pytest.raises(UtteranceError, match="'blip'.*too short: 0.050 s"):
        engine.run([Utterance("blip", str(path))], load_extractor("resemblyzer"),
                   lambda *_: None, engine.EngineOptions(progress=False))


def test_preprocessing_is_resemblyzers(sample_utterances):
    """The whole-array silence trimming and mel spectrogram give Resemblyzer's own results."""
    import librosa
    from resemblyzer import audio
    from scipy.signal import get_window

    from speechdump.extractors.resemblyzer import (MelSpectrogram, slaney_mel_filters,
                                                    trim_long_silences)

    np.testing.assert_allclose(slaney_mel_filters(16000, 400, 40),
                               librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), atol=1e-8)
    mel = MelSpectrogram()
    np.testing.assert_array_equal(mel.window, get_window("hann", 400, fftbins=True))
    trimmed_some = 0
    for utt, path in sample_utterances:
        samples = preprocess_wav(path)  # resampled, volume-normalised, trimmed by Resemblyzer
        untrimmed, rate = librosa.load(path, sr=16000)
        untrimmed = audio.normalize_volume(untrimmed, -30, increase_only=True)
        ours = trim_long_silences(untrimmed)
        np.testing.assert_array_equal(ours, audio.trim_long_silences(untrimmed), err_msg=utt)
        trimmed_some += len(ours) < len(untrimmed) - 480
        reference = audio.wav_to_mel_spectrogram(samples)
        np.testing.assert_allclose(mel(samples), reference, rtol=0,
                                   atol=1e-6 * np.abs(reference).max(), err_msg=utt)
    assert trimmed_some >= 5  # the trimming was exercised, not only a pass-through
