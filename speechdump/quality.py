"""Per-utterance quality measures (pure numpy): duration, share of speech, level, clipping and
SNR, and the Kaldi tables they are written to (``utt2<field>``, scripts/compute_quality.sh).

All but the clip ratio are measured on the waveform the engine decodes: mono float at 16 kHz,
full scale 1.0 (a file at another rate is resampled first, as for every toolkit).

* ``level_dbfs``: 10 log10 of the mean square over the whole utterance (RMS level, dB re
  full scale 1.0: a full-scale sine is -3.01 dBFS); -120 for digital silence.
* ``clip_ratio``: the share of sample times at which a channel is at |x| >= 0.999, counted in
  the audio as decoded (every channel in use, at the file's own rate): resampling rings a
  clipped stretch off the rails and a downmix halves a channel clipped alone. The integer
  maximum of a 16-bit file (32767/32768 = 0.99997, and -1.0) lies above 0.999, so samples at
  a 16-bit file's rails count.
* ``snr_db``: a VAD-based energy estimator. The speech regions are Silero VAD's (the same
  regions as ``--toolkit silero_vad``). Noise power Pn is the median of the mean squares of
  the 512-sample (32 ms) frames that touch no speech region, leaving out digital silence
  (frames with mean square below 1e-10, -100 dBFS: exact zeros would say there is no noise);
  the median keeps a breath or a speech tail the VAD left out from counting as noise. Speech
  power over the whole utterance is (mean square over the speech regions - Pn) x speech share,
  so the estimate is of mean(s^2) / mean(n^2) over the utterance (the usual definition of a
  mix's SNR). Where fewer than 4 such frames (0.13 s) remain, or there is no speech, it falls
  back to WADA-SNR (Kim & Stern 2008) over the samples above 1e-5 in magnitude: the table
  below maps G = ln(mean|x|) - mean(ln|x|) to SNR for Gamma(0.4)-distributed speech in white
  Gaussian noise. Estimates are clipped to [-20, 100] dB.

Measured (test/test_quality.py: white noise mixed into the 26 sample recordings at 5-25 dB):
see its printed table; docs/quality.md quotes it.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per noise frame: silero's step at 16 kHz (32 ms)
CLIP_LEVEL = 0.999
SILENT_POWER = 1e-10  # frames quieter than this (-100 dBFS) are digital silence, not noise
MIN_NOISE_FRAMES = 4
SNR_RANGE = (-20.0, 100.0)
LEVEL_FLOOR = -120.0
# The per-utterance vector the quality toolkit writes, in this order; each is utt2<name>.
FIELDS = ("dur", "speech_ratio", "level_dbfs", "clip_ratio", "snr_db")

# WADA-SNR: G = ln(mean|z|) - mean(ln|z|) of z = x + n at SNR -20, -19, ..., 100 dB, x = sign x
# Gamma(shape 0.4) (unit power), n white Gaussian; Monte Carlo with 2e6 samples, seed 0, made
# non-decreasing (test/test_quality.py regenerates it: wada_table()).
WADA_SNR = np.arange(-20.0, 101.0)
WADA_G = np.array([
    0.40970, 0.40972, 0.40980, 0.40990, 0.41002, 0.41024, 0.41024, 0.41056, 0.41100,
    0.41154, 0.41207, 0.41337, 0.41501, 0.41701, 0.42018, 0.42377, 0.42865, 0.43490,
    0.44230, 0.45148, 0.46221, 0.47489, 0.48946, 0.50551, 0.52377, 0.54389, 0.56572,
    0.58960, 0.61432, 0.64033, 0.66801, 0.69604, 0.72483, 0.75389, 0.78334, 0.81271,
    0.84222, 0.87169, 0.90059, 0.92907, 0.95680, 0.98420, 1.01080, 1.03655, 1.06155,
    1.08596, 1.10948, 1.13218, 1.15397, 1.17518, 1.19549, 1.21502, 1.23374, 1.25189,
    1.26894, 1.28562, 1.30155, 1.31684, 1.33164, 1.34544, 1.35876, 1.37143, 1.38366,
    1.39533, 1.40663, 1.41746, 1.42743, 1.43714, 1.44637, 1.45526, 1.46365, 1.47183,
    1.47952, 1.48710, 1.49423, 1.50101, 1.50747, 1.51372, 1.51963, 1.52514, 1.53050,
    1.53559, 1.54049, 1.54520, 1.54961, 1.55392, 1.55808, 1.56196, 1.56571, 1.56930,
    1.57267, 1.57601, 1.57907, 1.58199, 1.58485, 1.58754, 1.59006, 1.59256, 1.59497,
    1.59717, 1.59940, 1.60144, 1.60339, 1.60522, 1.60699, 1.60867, 1.61027, 1.61185,
    1.61331, 1.61468, 1.61605, 1.61728, 1.61851, 1.61971, 1.62087, 1.62196, 1.62297,
    1.62390, 1.62485, 1.62573, 1.62654
])


def wada_table(seed: int = 0, samples: int = 2_000_000) -> Tuple[np.ndarray, np.ndarray]:
    """The Monte Carlo that made WADA_G (about a second)."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.4, 1.0, samples) * rng.choice([-1.0, 1.0], samples)
    x /= np.sqrt(np.mean(x ** 2))
    noise = rng.standard_normal(samples)
    g = []
    for snr in WADA_SNR:
        a = np.abs(x + noise * 10 ** (-snr / 20))
        g.append(np.log(a.mean()) - np.mean(np.log(a)))
    return WADA_SNR.copy(), np.maximum.accumulate(np.array(g))


def _clamp_snr(value: float) -> float:
    return float(np.clip(value, *SNR_RANGE))


def level_dbfs(wave: np.ndarray) -> float:
    power = float(np.mean(np.square(wave, dtype=np.float64))) if len(wave) else 0.0
    return max(10 * np.log10(power), LEVEL_FLOOR) if power > 0 else LEVEL_FLOOR


def clip_ratio(samples: np.ndarray) -> float:
    """The share of sample times at full scale: ``samples`` ``[T]`` or ``[T, C]`` (any
    channel)."""
    if not len(samples):
        return 0.0
    at_rails = np.abs(samples) >= CLIP_LEVEL
    return float(np.mean(at_rails if at_rails.ndim == 1 else at_rails.any(axis=1)))


def wada_snr(wave: np.ndarray) -> float:
    """WADA-SNR in dB over the samples above 1e-5 in magnitude (digital silence left out)."""
    a = np.abs(np.asarray(wave, dtype=np.float64))
    a = a[a > 1e-5]
    if len(a) < FRAME:
        return SNR_RANGE[0] if len(a) == 0 else _clamp_snr(0.0)
    g = np.log(a.mean()) - np.mean(np.log(a))
    return _clamp_snr(np.interp(g, WADA_G, WADA_SNR))


def speech_mask(regions: np.ndarray, length: int) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    for start, end in np.asarray(regions).reshape(-1, 2).tolist():
        mask[max(start, 0):min(end, length)] = True
    return mask


def vad_snr(wave: np.ndarray, regions: np.ndarray) -> Tuple[float, str]:
    """(SNR dB, "vad" or "wada": which estimator gave it); see the module doc."""
    wave = np.asarray(wave, dtype=np.float64)
    mask = speech_mask(regions, len(wave))
    frames = len(wave) // FRAME
    if frames and mask.any():
        powers = np.mean(np.square(wave[:frames * FRAME].reshape(frames, FRAME)), axis=1)
        speech = mask[:frames * FRAME].reshape(frames, FRAME).any(axis=1)
        noise = powers[~speech & (powers >= SILENT_POWER)]
        if len(noise) >= MIN_NOISE_FRAMES:
            pn = float(np.median(noise))
            signal = (float(np.mean(np.square(wave[mask]))) - pn) * float(mask.mean())
            if signal <= 0:
                return SNR_RANGE[0], "vad"
            return _clamp_snr(10 * np.log10(signal / pn)), "vad"
    return wada_snr(wave), "wada"


def measure(wave: np.ndarray, regions: np.ndarray, clipped: float) -> np.ndarray:
    """The FIELDS of one 16 kHz utterance with its speech regions (``[n, 2]`` samples) and the
    clip ratio of its audio as decoded."""
    n = len(wave)
    speech = int(speech_mask(regions, n).sum())
    return np.array([n / SAMPLE_RATE, speech / n if n else 0.0, level_dbfs(wave), clipped,
                     vad_snr(wave, regions)[0]], dtype=np.float32)


FORMATS = {"dur": "{:.4f}", "speech_ratio": "{:.4f}", "level_dbfs": "{:.2f}",
           "clip_ratio": "{:.6f}", "snr_db": "{:.2f}"}


def table_lines(vectors: Dict[str, np.ndarray], field: str) -> Sequence[Tuple[str, str]]:
    """(utt, formatted value) of one field, in the order of ``vectors``."""
    i = FIELDS.index(field)
    return [(utt, FORMATS[field].format(float(np.asarray(v).reshape(-1)[i])))
            for utt, v in vectors.items()]
