"""wav.scp entry forms, audio formats, mono policy, errors and resampler cache, on real speech."""

import threading

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from conftest import SAMPLES
from speechdump.audio import (ResamplerCache, UtteranceError, downmix, load_audio,
                              read_samples)
from speechdump.data import Utterance, read_utterances

AUDIO = SAMPLES / "audio"


@pytest.mark.parametrize("name, rate, channels", [
    ("arctic-aew-a0001.wav", 16000, 1),        # WAV PCM 16-bit
    ("ls-1688-142285-0003.flac", 16000, 1),    # FLAC 16-bit
    ("jfk-inaugural1961.flac", 44100, 2),      # FLAC 24-bit stereo
    ("ls-6829-rtvc00000.mp3", 16000, 1),       # MP3
    ("vctk-p240-rtvc00000.mp3", 24000, 1),     # MP3 at 24 kHz
    ("vctk-p238-165.wav", 48000, 1),           # WAV at 48 kHz
])
def test_every_sample_format_decodes(name, rate, channels):
    samples, got_rate = read_samples(Utterance("u", str(AUDIO / name)))
    assert got_rate == rate
    assert samples.shape[1] == channels
    assert samples.dtype == np.float32
    assert samples.shape[0] > rate  # every sample is over a second of speech
    assert 0.01 < np.abs(samples).max() <= 1.0


def test_wav_24bit_decodes_to_the_same_samples(tmp_path):
    ref, rate = soundfile.read(AUDIO / "arctic-aew-a0002.wav", dtype="float32")
    path = tmp_path / "a24.wav"
    soundfile.write(path, ref, rate, subtype="PCM_24")
    samples, got_rate = read_samples(Utterance("u", str(path)))
    assert got_rate == rate
    np.testing.assert_array_equal(samples[:, 0], ref)  # 16-bit values are exact in 24 bits


def test_stereo_is_averaged_to_mono():
    path = str(AUDIO / "jfk-inaugural1961.flac")
    stereo, rate = soundfile.read(path, dtype="float32")
    mono = load_audio(Utterance("jfk", path), rate, ResamplerCache())
    np.testing.assert_array_equal(mono, stereo.mean(axis=1))


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_the_mean_over_channels(channels):
    stereo, _ = soundfile.read(AUDIO / "jfk-inaugural1961.flac", dtype="float32")
    gains = np.arange(1, channels + 1, dtype=np.float32)
    samples = np.ascontiguousarray(np.tile(stereo, 3)[:, :channels] * gains)
    mono = downmix(samples)
    assert mono.dtype == np.float32 and mono.shape == (len(samples),)
    np.testing.assert_array_equal(mono, samples.mean(axis=1))


def test_pipe_entry_equals_the_file(tmp_path):
    path = AUDIO / "ls-1998-15444-0001.flac"
    direct, _ = read_samples(Utterance("u", str(path)))
    piped, rate = read_samples(Utterance("u", f"cat '{path}' |"))
    assert rate == 16000
    np.testing.assert_array_equal(piped, direct)


def test_ark_offset_entry_equals_the_file(tmp_path):
    pcm, rate = soundfile.read(AUDIO / "vctk-p225-003.wav", dtype="int16")
    ark, scp = tmp_path / "wav.ark", tmp_path / "wav.scp"
    kaldiio.save_ark(str(ark), {"first": (rate, pcm[:8000]), "vctk": (rate, pcm)}, scp=str(scp))
    entry = dict(line.split() for line in scp.read_text().splitlines())["vctk"]
    assert entry.startswith(str(ark) + ":")
    samples, got_rate = read_samples(Utterance("vctk", entry))
    assert got_rate == rate
    np.testing.assert_array_equal(samples[:, 0], pcm.astype(np.float32) / 32768)


def test_segments_cut_the_recording(tmp_path):
    path = AUDIO / "ls-2033-164914-0001.flac"
    (tmp_path / "wav.scp").write_text(f"rec {path}\nrec_pipe cat {path} |\n")
    (tmp_path / "segments").write_text("seg1 rec 0.50 1.75\nseg2 rec_pipe 0.50 1.75\n"
                                       "seg3 rec 2.00 -1\n")
    full, rate = soundfile.read(path, dtype="float32")
    utts = read_utterances(str(tmp_path / "wav.scp"), str(tmp_path / "segments"))
    assert [u.utt_id for u in utts] == ["seg1", "seg2", "seg3"]
    seg1, seg2, seg3 = (read_samples(u)[0][:, 0] for u in utts)
    np.testing.assert_array_equal(seg1, full[8000:28000])
    np.testing.assert_array_equal(seg2, full[8000:28000])
    np.testing.assert_array_equal(seg3, full[32000:])



def test_mp3_segments_equal_the_same_span_of_a_full_decode():
    # A seek lands inside MP3's bit reservoir: libmpg123 then says "part2_3_length ... too
    # large" on stderr while it primes from earlier frames. The samples must not suffer.
    path = AUDIO / "vctk-p240-rtvc00000.mp3"
    full, rate = soundfile.read(path, dtype="float32")
    for start in np.linspace(0.0, len(full) / rate - 1.0, 25):
        utt = Utterance("seg", str(path), start=float(start), end=float(start) + 1.0)
        first, last = int(round(utt.start * rate)), int(round(utt.end * rate))
        segment = read_samples(utt)[0][:, 0]
        assert abs(len(segment) - rate) <= 1
        np.testing.assert_allclose(segment, full[first:last], rtol=0, atol=2e-7)

def test_resampling_to_the_model_rate():
    path = str(AUDIO / "vctk-p301-102.wav")  # 48 kHz
    native, rate = soundfile.read(path, dtype="float32")
    wave = load_audio(Utterance("p301", path), 16000, ResamplerCache())
    assert wave.dtype == np.float32
    assert len(wave) == int(np.ceil(len(native) * 16000 / rate))
    # Energy is kept: speech sits well below the 8 kHz cut-off.
    assert abs(np.sqrt(np.mean(wave ** 2)) / np.sqrt(np.mean(native ** 2)) - 1) < 0.05


@pytest.mark.parametrize("make, reason", [
    (lambda d: d / "missing.wav", "no such file"),
    (lambda d: (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunk" * 10) or
     d / "corrupt.wav", "cannot read audio"),
    (lambda d: (d / "empty.flac").write_bytes(b"") or d / "empty.flac", "empty"),
])
def test_bad_files_name_the_utterance_and_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(UtteranceError) as err:
        load_audio(Utterance("spk1-utt7", str(path)), 16000, ResamplerCache())
    message = str(err.value)
    assert "spk1-utt7" in message and str(path) in message and reason in message
    assert err.value.utt_id == "spk1-utt7"


def test_truncated_flac_is_an_error(tmp_path):
    data = (AUDIO / "ls-1688-142285-0006.flac").read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[:60])  # header only, cut inside the stream info
    with pytest.raises(UtteranceError, match="cut.flac"):
        load_audio(Utterance("cut", str(path)), 16000, ResamplerCache())


@pytest.mark.parametrize("command, reason", [
    ("false |", "exited with code 1"),
    ("true |", "printed nothing"),
])
def test_failing_pipes_are_errors(command, reason):
    with pytest.raises(UtteranceError, match=reason) as err:
        load_audio(Utterance("piped-utt", command), 16000, ResamplerCache())
    assert "piped-utt" in str(err.value)


def test_resampler_cache_under_eight_threads_and_four_rates():
    sources = {22050: "ljspeech-lj-002-0020.wav", 24000: "vctk-p240-rtvc00000.mp3",
               44100: "jfk-inaugural1961.flac", 48000: "vctk-p314-272.wav"}
    waves = {}
    for rate, name in sources.items():
        samples, got = soundfile.read(AUDIO / name, dtype="float32", always_2d=True)
        assert got == rate
        waves[rate] = torch.from_numpy(samples.mean(axis=1))
    expected = {rate: ResamplerCache().resample(w, rate, 16000) for rate, w in waves.items()}

    cache = ResamplerCache()
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker(index):
        try:
            barrier.wait()  # all threads hit the empty cache at the same moment
            for step in range(12):
                rate = list(sources)[(index + step) % 4]
                results.append((rate, cache.resample(waves[rate], rate, 16000)))
        except Exception as exc:  # surfaced below: threads swallow exceptions
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 96
    assert len(cache) == 4  # one resampler per (source, target, device, dtype)
    built = {key[0]: r for key, r in cache._resamplers.items()}
    assert all(cache.get(rate, 16000) is built[rate] for rate in sources)
    for rate, out in results:
        torch.testing.assert_close(out, expected[rate], rtol=0, atol=0)


@pytest.mark.parametrize("source, target", [(48000, 16000), (32000, 16000), (24000, 16000),
                                            (44100, 16000), (22050, 16000), (8000, 16000),
                                            (16000, 24000)])
def test_resampler_is_torchaudios_sinc(source, target):
    # The wide convolution computes the same products as torchaudio's own, for one or many
    # output phases, up- and downsampling, a batch of waves, and a length that is no multiple
    # of the stride (7 s of speech plus 1 sample).
    samples, rate = soundfile.read(AUDIO / "vctk-p301-102.wav", dtype="float32")
    wave = torch.from_numpy(samples[:7 * rate + 1])
    waves = torch.stack([wave, wave.flip(0)])
    expected = torchaudio.functional.resample(waves, source, target, **ResamplerCache.FILTER)
    got = ResamplerCache().resample(waves, source, target)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    # In float64 the two agree to rounding: the float32 differences are summation order only.
    waves = waves.double()
    expected = torchaudio.functional.resample(waves, source, target, **ResamplerCache.FILTER)
    torch.testing.assert_close(ResamplerCache().resample(waves, source, target), expected,
                               rtol=0, atol=1e-12)


def test_resampler_cache_keys_on_dtype():
    cache = ResamplerCache()
    assert cache.get(48000, 16000, "cpu", torch.float32) is not cache.get(48000, 16000, "cpu",
                                                                          torch.float64)
    assert len(cache) == 2


def test_nan_samples_are_an_error(tmp_path):
    samples, rate = soundfile.read(AUDIO / "arctic-aew-a0003.wav", dtype="float32")
    samples[1000:1010] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, samples, rate, subtype="FLOAT")
    with pytest.raises(UtteranceError, match="NaN or Inf") as err:
        load_audio(Utterance("nan-utt", str(path)), 16000, ResamplerCache())
    assert "nan-utt" in str(err.value) and str(path) in str(err.value)
