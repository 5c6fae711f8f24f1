"""Kaldi fbank/MFCC extractors: equal to torchaudio's Kaldi-compliant functions on the same input.

Measured: bit-for-bit equal on all 26 samples (fbank), and on every utterance tested (MFCC)."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from torchaudio.compliance import kaldi

from conftest import REPO, SAMPLES, make_data_dir
from speechdump import engine
from speechdump.audio import ResamplerCache, UtteranceError, load_audio
from speechdump.data import Utterance
from speechdump.errors import OptionError
from speechdump.extractors import load_extractor
from speechdump.readers import ScpDataset


def run_engine(extractor, sample_utterances, **options):
    out = {}
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    engine.run(utterances, extractor, out.__setitem__,
               engine.EngineOptions(progress=False, **{"num_workers": 4, **options}))
    return out


def kaldi_input(path):
    """A 16-bit 16 kHz wav as Kaldi's compute-*-feats reads it: integer sample values."""
    samples, rate = soundfile.read(path, dtype="int16")
    assert rate == 16000 and samples.ndim == 1
    return torch.from_numpy(samples.astype(np.float32)).unsqueeze(0)


def snip_edges_frames(num_samples, frame_length_ms=25.0, frame_shift_ms=10.0, rate=16000):
    length, shift = int(rate * frame_length_ms / 1000), int(rate * frame_shift_ms / 1000)
    return 1 + (num_samples - length) // shift


@pytest.fixture(scope="module")
def pcm16_16k(sample_utterances):
    infos = {utt: soundfile.info(path) for utt, path in sample_utterances}
    found = [(utt, path) for utt, path in sample_utterances
             if infos[utt].samplerate == 16000 and infos[utt].subtype == "PCM_16"]
    assert len(found) == 18
    return found


@pytest.fixture(scope="module")
def fbank_out(sample_utterances):
    return run_engine(load_extractor("fbank"), sample_utterances)


@pytest.mark.kernels
def test_fbank_equals_torchaudio_kaldi_on_16bit_wavs(fbank_out, pcm16_16k):
    for utt, path in pcm16_16k:
        wave = kaldi_input(path)
        ref = kaldi.fbank(wave, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                          energy_floor=0.0, sample_frequency=16000).numpy()
        got = fbank_out[utt]
        assert got.dtype == np.float32 and got.shape == ref.shape == (
            snip_edges_frames(wave.shape[1]), 80), utt
        np.testing.assert_array_equal(got, ref, err_msg=utt)  # bit for bit


@pytest.mark.kernels
def test_every_sample_matches_torchaudio_on_the_loaded_waveform(fbank_out, sample_utterances):
    # Other rates, stereo, mp3: same functions on speechdump's mono 16 kHz waveform x 32768.
    cache = ResamplerCache()
    assert len(fbank_out) == len(sample_utterances) == 26
    for utt, path in sample_utterances:
        wave = load_audio(Utterance(utt, path), 16000, cache)
        ref = kaldi.fbank(torch.from_numpy(wave * 32768).unsqueeze(0), num_mel_bins=80,
                          dither=0.0, energy_floor=0.0).numpy()
        assert fbank_out[utt].shape == (snip_edges_frames(len(wave)), 80), utt
        assert np.abs(fbank_out[utt] - ref).max() <= 1e-5, utt


@pytest.mark.kernels
def test_mfcc_equals_torchaudio_kaldi_and_honours_options(sample_utterances, pcm16_16k):
    chosen = pcm16_16k[:4]
    default = run_engine(load_extractor("mfcc"), chosen)
    custom = run_engine(load_extractor("mfcc", num_mel_bins=40, num_ceps=20, frame_length=20.0,
                                       frame_shift=5.0), chosen)
    for utt, path in chosen:
        wave = kaldi_input(path)
        ref = kaldi.mfcc(wave, dither=0.0, energy_floor=0.0).numpy()  # 23 bins, 13 ceps
        assert default[utt].shape == (snip_edges_frames(wave.shape[1]), 13)
        np.testing.assert_array_equal(default[utt], ref, err_msg=utt)
        ref = kaldi.mfcc(wave, num_mel_bins=40, num_ceps=20, frame_length=20.0, frame_shift=5.0,
                         dither=0.0, energy_floor=0.0).numpy()
        assert custom[utt].shape == (snip_edges_frames(wave.shape[1], 20.0, 5.0), 20)
        np.testing.assert_array_equal(custom[utt], ref, err_msg=utt)


def test_fbank_options_change_the_shape(pcm16_16k):
    chosen = pcm16_16k[:2]
    out = run_engine(load_extractor("fbank", num_mel_bins=40, frame_shift=20.0), chosen)
    for utt, path in chosen:
        wave = kaldi_input(path)
        assert out[utt].shape == (snip_edges_frames(wave.shape[1], 25.0, 20.0), 40)
        np.testing.assert_array_equal(
            out[utt],
            kaldi.fbank(wave, num_mel_bins=40, frame_shift=20.0, energy_floor=0.0).numpy())


@pytest.mark.kernels
def test_batch_composition_does_not_matter(fbank_out, sample_utterances):
    one_by_one = run_engine(load_extractor("fbank"), sample_utterances[:6], batch_seconds=0.01,
                            num_workers=1)
    for utt, feats in one_by_one.items():
        np.testing.assert_array_equal(feats, fbank_out[utt])



def test_dither_is_kaldis_noise_seeded_by_the_audio(fbank_out, sample_utterances):
    """dither > 0: the same features whatever the threads, batches or order; Kaldi-sized."""
    first = run_engine(load_extractor("fbank", dither=1.0), sample_utterances)
    again = run_engine(load_extractor("fbank", dither=1.0), sample_utterances[::-1],
                       num_workers=1, batch_seconds=1.0)
    for utt, feats in first.items():
        np.testing.assert_array_equal(feats, again[utt], err_msg=utt)
        assert not np.array_equal(feats, fbank_out[utt]), utt
    # On digital silence the dither is all there is: the log mel energies of N(0, 1) samples,
    # as torchaudio's (and Kaldi's) dither gives them with any seed.
    silence = np.zeros(16000, dtype=np.float32)
    ours = load_extractor("fbank", dither=1.0).prepare(silence)
    torch.manual_seed(123)
    reference = kaldi.fbank(torch.zeros(1, 16000), num_mel_bins=80, dither=1.0,
                            energy_floor=0.0).numpy()
    assert abs(ours.mean() - reference.mean()) < 0.05
    assert not np.array_equal(ours, reference)  # our own draw, not the global generator's
    # Seeding per utterance leaves torch's global generator where it was.
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_extractor("fbank", dither=1.0).prepare(silence)
    assert torch.equal(torch.rand(3), expected)

def test_worker_cli_passes_options_and_writes_frame_counts(tmp_path, sample_utterances):
    keep = {utt for utt, _ in sample_utterances[:3]}
    data = make_data_dir(tmp_path / "data", keep=keep)
    split = tmp_path / "split"
    subprocess.run([sys.executable, str(REPO / "pyscripts" / "extract.py"), "--toolkit", "mfcc",
                    "--tag", "mfcc", "--num_mel_bins", "30", "--num_ceps", "20",
                    "--frame_shift", "12.5", str(data / "wav.scp"), str(split), "1"],
                   check=True, capture_output=True, text=True)
    written = ScpDataset({"mfcc": str(split / "mfcc.1.scp")})
    arrays = {item["id"]: item["mfcc"] for item in written}
    frames = dict(line.split() for line in (split / "utt2num_frames.1").read_text().splitlines())
    assert sorted(arrays) == sorted(keep)
    for utt, path in sample_utterances[:3]:
        wave = kaldi_input(path)
        assert arrays[utt].shape == (snip_edges_frames(wave.shape[1], 25.0, 12.5), 20)
        assert int(frames[utt]) == len(arrays[utt])
        np.testing.assert_array_equal(arrays[utt], kaldi.mfcc(
            wave, num_mel_bins=30, num_ceps=20, frame_shift=12.5, energy_floor=0.0).numpy())


def test_input_shorter_than_one_frame_is_refused(tmp_path):
    samples, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="float32")
    path = tmp_path / "blip.wav"
    soundfile.write(path, samples[:399], rate)  # one sample short of a 25 ms frame
    with pytest.raises(UtteranceError, match="'blip'.*too short: 0.025 s.*at least 0.025 s"):
        engine.run([Utterance("blip", str(path))], load_extractor("fbank"), lambda *_: None,
                   engine.EngineOptions(progress=False))
    exact = tmp_path / "one.wav"
    soundfile.write(exact, samples[:400], rate)
    out = {}
    engine.run([Utterance("one", str(exact))], load_extractor("fbank"), out.__setitem__,
               engine.EngineOptions(progress=False))
    assert out["one"].shape == (1, 80)
    with pytest.raises(ValueError, match="too short"):
        load_extractor("mfcc").prepare(samples[:100])


def test_a_model_or_bad_options_are_refused():
    for toolkit in ("fbank", "mfcc"):
        with pytest.raises(ValueError, match="need no model"):
            load_extractor(toolkit, model="exp/some_model.pth")
        assert load_extractor(toolkit, model="").frame_level
    with pytest.raises(ValueError, match="num_ceps"):
        load_extractor("mfcc", num_ceps=30)
    with pytest.raises(OptionError, match="fbank takes no option --num_ceps"):
        load_extractor("fbank", num_ceps=13)
    with pytest.raises(ValueError, match="frame_shift"):
        load_extractor("fbank", frame_shift=0.0)
