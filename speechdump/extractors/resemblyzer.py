"""Resemblyzer's GE2E speaker encoder (pretrained weights ship in its wheel: the offline default).

Batched across utterances: every utterance is cut into the fixed 1.6 s partial windows that
``VoiceEncoder.embed_utterance`` uses, the partials of a whole batch go through the LSTM in
one forward pass, and each utterance's embedding is the L2-normalised mean of its own
partials. No padding is shared between utterances, so a batch gives what each utterance alone
gives. Preprocessing is ``resemblyzer.preprocess_wav``'s: volume normalisation to -30 dBFS
(increase only), trimming of long silences with webrtcvad, and its mel spectrogram.

The last two are computed here with the same arithmetic as ``resemblyzer.audio`` but in whole-
array numpy: its silence trimming packs every sample as a Python int (``struct.pack``) and its
mel spectrogram goes through librosa, whose first call imports and compiles numba code (about
1 s per job). Both held the GIL in the loader threads long enough to stall the model.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional

import numpy as np
import scipy.fft
import torch
import webrtcvad
from resemblyzer import VoiceEncoder, audio, hparams
from scipy.ndimage import binary_dilation

from speechdump import weights
from speechdump.errors import ModelError
from speechdump.extractors import register
from speechdump.extractors.base import Extractor, Stream

# Resemblyzer's own embed_utterance defaults.
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
INT16_MAX = 2 ** 15 - 1  # the PCM scale of its VAD input
VAD_WINDOW = hparams.vad_window_length * hparams.sampling_rate // 1000  # samples
# Saved beside the encoder in Resemblyzer's files (the wheel's too): the GE2E loss's similarity
# scale and bias, used in training only: left out of what is loaded.
GE2E_LOSS_TENSORS = ("similarity_weight", "similarity_bias")


@register("resemblyzer")
class ResemblyzerExtractor(Extractor):
    concurrent_forward = True
    # 0.60-0.70 of intra_op's time (bench/cpu_layout.py): its LSTM's small matrices keep one thread
    # busy, not two
    cpu_layout = "passes"
    model_help = ("optional: a Resemblyzer weights file (pretrained.pt); default: the encoder "
                  "shipped in its wheel")
    sample_rate = 16000
    dim = 256
    streams = (Stream(dim=dim),)
    packages = ("resemblyzer",)

    @classmethod
    def model_files(cls, model):
        # Without --model, the encoder that ships in the wheel.
        return super().model_files(model) if model else [
            os.path.join(os.path.dirname(audio.__file__), "pretrained.pt")]
    # Below a few VAD windows (30 ms each) and mel frames there is nothing to embed.
    min_seconds = 0.1

    @classmethod
    def check(cls, model, options):
        if model and not os.path.isfile(model):
            raise ModelError(f"resemblyzer model '{model}' is not a file ({cls.model_help})")
        if model:
            # The wheel's encoder gives the architecture: a 1.4 M-parameter LSTM, cheap to build.
            checked_state(model, VoiceEncoder(device="cpu", verbose=False))
        return super().check(model, options)

    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        self.device = torch.device(device)
        # The wheel's encoder, then --model's weights once they are known to fit it (with
        # weights_fpath=model, VoiceEncoder would load whatever they are, non-strictly).
        self.encoder = VoiceEncoder(device=self.device, verbose=False)
        if model:
            weights.load(self.encoder, checked_state(model, self.encoder),
                         allow_unexpected=GE2E_LOSS_TENSORS)
        self.encoder.eval()
        self.mel = MelSpectrogram()

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Waveform at 16 kHz -> the utterance's partial mel windows ``[P, 160, 40]``."""
        wav = audio.normalize_volume(wave, hparams.audio_norm_target_dBFS, increase_only=True)
        wav = trim_long_silences(wav)
        if len(wav) == 0:
            raise ValueError("no speech left after Resemblyzer's silence trimming")
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(wav), PARTIALS_PER_SECOND, MIN_COVERAGE)
        needed = wav_slices[-1].stop
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)), "constant")
        mel = self.mel(wav)
        return np.stack([mel[s] for s in mel_slices])

    def cost(self, partials: np.ndarray) -> float:
        return len(partials) * hparams.partials_n_frames * hparams.mel_window_step / 1000

    def batch_cost(self, costs) -> float:
        return sum(costs)  # partial windows are stacked, never padded

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        mels = torch.from_numpy(np.concatenate(batch)).to(self.device)
        with torch.inference_mode():
            partial_embeds = self.encoder(mels).float().cpu().numpy()
        bounds = np.cumsum([len(p) for p in batch])[:-1]
        embeds = []
        for partials in np.split(partial_embeds, bounds):
            raw = partials.mean(axis=0)
            embeds.append((raw / np.linalg.norm(raw, 2)).astype(np.float32))
        return embeds


def checked_state(path: str, encoder: VoiceEncoder) -> Dict[str, torch.Tensor]:
    """The encoder weights in a Resemblyzer file (its "model_state" entry, which VoiceEncoder
    loads), if they are exactly ``encoder``'s tensors: else a ModelError naming the file."""
    checkpoint = weights.read(path)
    if not isinstance(checkpoint, Mapping) or "model_state" not in checkpoint:
        found = (f"keys {', '.join(map(str, list(checkpoint)[:6]))}"
                 if isinstance(checkpoint, Mapping) else f"a {type(checkpoint).__name__}")
        raise ModelError(f"{path} is not a Resemblyzer weights file: no 'model_state' entry "
                         f"({found}; Resemblyzer saves step, model_state, optimizer_state)")
    state = weights.as_state(checkpoint["model_state"], f"{path} ('model_state')")
    weights.check_module(encoder, state, path, allow_unexpected=GE2E_LOSS_TENSORS,
                         what="Resemblyzer's VoiceEncoder (3 LSTM layers of 256, 40 mels in)")
    return state


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """``resemblyzer.audio.trim_long_silences``: drops the silences webrtcvad finds longer than
    ``vad_max_silence_length`` windows, keeping the same samples."""
    wav = wav[:len(wav) - len(wav) % VAD_WINDOW]
    pcm = (np.round(wav * INT16_MAX)).astype("<i2").tobytes()
    vad = webrtcvad.Vad(mode=3)
    step = 2 * VAD_WINDOW  # bytes per window
    voiced = np.array([vad.is_speech(pcm[i:i + step], sample_rate=hparams.sampling_rate)
                       for i in range(0, len(pcm), step)], dtype=float)
    # Moving average of the voice flags, as Resemblyzer computes it.
    width = hparams.vad_moving_average_width
    padded = np.concatenate((np.zeros((width - 1) // 2), voiced, np.zeros(width // 2)))
    sums = np.cumsum(padded, dtype=float)
    sums[width:] = sums[width:] - sums[:-width]
    mask = np.round(sums[width - 1:] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(hparams.vad_max_silence_length + 1))
    return wav[np.repeat(mask, VAD_WINDOW)]


class MelSpectrogram:
    """``resemblyzer.audio.wav_to_mel_spectrogram`` (librosa's power mel spectrogram, centred
    frames, zero padding, periodic Hann window, Slaney mel filters) as ``[frames, mels]``."""

    def __init__(self):
        rate = hparams.sampling_rate
        self.n_fft = rate * hparams.mel_window_length // 1000
        self.hop = rate * hparams.mel_window_step // 1000
        # librosa's periodic Hann window, scipy's arithmetic (importing scipy.signal takes 0.3 s).
        self.window = 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, self.n_fft + 1)[:-1])
        self.filters = slaney_mel_filters(rate, self.n_fft, hparams.mel_n_channels).T

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        padded = np.pad(wav, self.n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[::self.hop]
        spectrum = scipy.fft.rfft(frames * self.window, axis=-1).astype(np.complex64)
        return (np.abs(spectrum) ** 2) @ self.filters


def slaney_mel_filters(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)``: triangular filters from 0 Hz
    to ``rate / 2`` on Slaney's mel scale, area-normalised, ``[n_mels, 1 + n_fft // 2]``."""
    # Slaney's scale: 200/3 Hz per mel up to 1 kHz, logarithmic above.
    hz_per_mel, log_hz, log_step = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    log_mel = log_hz / hz_per_mel
    top = log_mel + np.log(rate / 2.0 / log_hz) / log_step  # rate / 2 is above 1 kHz
    mels = np.linspace(0.0, top, n_mels + 2)
    edges = np.where(mels >= log_mel, log_hz * np.exp(log_step * (mels - log_mel)),
                     hz_per_mel * mels)
    ramps = edges[:, None] - np.fft.rfftfreq(n_fft, 1.0 / rate)[None, :]
    widths = np.diff(edges)[:, None]
    weights = np.maximum(0, np.minimum(-ramps[:-2] / widths[:-1], ramps[2:] / widths[1:]))
    weights *= 2.0 / (edges[2:] - edges[:-2])[:, None]
    return weights.astype(np.float32)
