"""Kaldi filterbank and MFCC features (``--toolkit fbank`` / ``--toolkit mfcc``): no model.

Computed with ``torchaudio.compliance.kaldi.fbank`` / ``.mfcc``, which reproduce Kaldi's
``compute-fbank-feats`` / ``compute-mfcc-feats``. Output: one ``[frames, dim]`` float32 matrix
per utterance (``dim`` = ``num_mel_bins`` for fbank, ``num_ceps`` for MFCC).

Options (Kaldi's defaults unless said otherwise):

* ``dither=0.0`` (Kaldi: 1.0): no random noise. A non-zero dither adds Kaldi's Gaussian noise
  to every frame, drawn from a generator seeded by the utterance's own samples: the same
  audio gets the same features in any job, batch, thread or rerun (Kaldi's noise follows the
  order a job meets its utterances in).
* ``snip_edges=True`` (Kaldi's default): only frames that fit wholly in the utterance, so
  ``frames = 1 + (N - frame_len) // frame_shift`` in samples (``frame_len`` =
  ``int(sample_rate * frame_length / 1000)``, likewise ``frame_shift``).
* ``energy_floor=0.0`` (Kaldi's default; torchaudio's is 1.0). It only floors the log-energy
  term, which is off here, so it has no effect on the output.
* ``use_energy=False`` for both. For MFCC that is torchaudio's default and what Kaldi recipes
  set in ``conf/mfcc.conf`` (``--use-energy=false``); Kaldi's own binary default is true,
  which puts the frame log-energy in place of C0.
* povey window, pre-emphasis 0.97, DC offset removal, FFT size rounded to a power of two,
  ``low_freq=20``, ``high_freq=0`` (Nyquist), ``cepstral_lifter=22`` (MFCC), all as in Kaldi.

Input scaling: Kaldi reads 16-bit wavs as their integer sample values, so the float waveform
in [-1, 1] (soundfile's ``int16 / 32768``) is multiplied by 32768. For a 16-bit file that
gives back its exact integer samples, so the features are those ``compute-fbank-feats`` gives
on the file. Multi-channel audio is averaged to mono (speechdump's mono policy; Kaldi would
need ``--channel``), and audio at another rate is resampled to ``sample_rate`` first.

Where the work runs: ``prepare`` computes each utterance's features in the engine's loader
threads (in parallel; torch releases the GIL), and ``forward`` only hands them back. Measured
on the 26 sample recordings (149 s of audio, one CPU thread): 0.063 s one utterance at a time
against 0.13 s for all frames of all utterances concatenated through one FFT and mel matmul
(equal bit for bit). Batching is slower, and decoding plus resampling (0.19 s) costs more
than the features anyway, so the features are computed on the CPU whatever ``device`` says.
"""

from __future__ import annotations

import abc
import hashlib
import threading
from typing import TYPE_CHECKING, List, Optional

import numpy as np

from speechdump.errors import OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, Extractor, Option, Stream, non_negative, positive

if TYPE_CHECKING:  # imported where it computes: the pre-flight reads the declaration only
    import torch

# Kaldi reads 16-bit PCM as integer sample values; soundfile gives them divided by 2 ** 15.
INT16_SCALE = 32768.0
# torchaudio draws the dither from torch's global generator: seeding it for one utterance must
# not interleave with another loader thread's.
_GLOBAL_RNG = threading.Lock()


# The options fbank and MFCC share.
FRAME_OPTIONS = (
    Option("frame_length", float, 25.0, "frame length in ms", check=positive),
    Option("frame_shift", float, 10.0, "frame shift in ms", check=positive),
    Option("dither", float, 0.0, "Kaldi's dither (Kaldi: 1.0), seeded per utterance",
           check=non_negative),
    Option("sample_rate", int, 16000, "rate the audio is resampled to (8000 for telephone "
           "speech)", check=positive),
)


class _KaldiFeatsExtractor(Extractor):
    concurrent_forward = True
    # the features of one utterance are too small a task to share between threads
    cpu_layout = "passes"
    packages = ("torchaudio",)

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        dim = options.get("num_ceps") or options["num_mel_bins"]
        return [Stream(shape=FRAMES, frame_shift=options["frame_shift"] / 1000, dim=dim)]

    def __init__(self, model: Optional[str], device: str, frame_length: float,
                 frame_shift: float, dither: float, sample_rate: int):
        if model:
            raise OptionError(f"{self.name} features need no model; got model '{model}' "
                              f"(leave --model empty)")
        self.device = device  # accepted for the common interface; the work runs on the CPU
        self.sample_rate = int(sample_rate)
        self.frame_length = float(frame_length)
        self.frame_shift = float(frame_shift)
        self.dither = float(dither)
        if self.sample_rate <= 0:
            raise OptionError(f"sample_rate must be positive, got {sample_rate}")
        if self.frame_length <= 0 or self.frame_shift <= 0:
            raise OptionError(f"frame_length and frame_shift must be positive milliseconds, got "
                              f"{frame_length} and {frame_shift}")
        if self.dither < 0:
            raise OptionError(f"dither must be >= 0, got {dither}")
        # Kaldi's WindowSize() / WindowShift(): truncated to whole samples.
        self.window_size = int(self.sample_rate * self.frame_length * 0.001)
        self.window_shift = int(self.sample_rate * self.frame_shift * 0.001)
        if self.window_size < 2:
            raise OptionError(f"frame_length {frame_length} ms is under 2 samples at "
                              f"{self.sample_rate} Hz")
        if self.window_shift < 1:
            raise OptionError(f"frame_shift {frame_shift} ms is under 1 sample at "
                              f"{self.sample_rate} Hz")
        # At least one whole frame (snip_edges).
        self.min_seconds = self.window_size / self.sample_rate
        import torch

        # Let torchaudio check the remaining options once, on one silent frame.
        try:
            dim = self._features(torch.zeros(1, self.window_size)).shape[1]
        except (AssertionError, RuntimeError) as exc:
            raise OptionError(f"invalid {self.name} options: {exc}") from exc
        self.dim = dim
        self.streams = (Stream(shape=FRAMES, frame_shift=self.frame_shift / 1000, dim=dim),)

    def _options(self) -> dict:
        return dict(frame_length=self.frame_length, frame_shift=self.frame_shift,
                    dither=self.dither, energy_floor=0.0, snip_edges=True,
                    sample_frequency=float(self.sample_rate), use_energy=False)

    @abc.abstractmethod
    def _compute(self, wave: torch.Tensor) -> torch.Tensor:
        """[1, samples] in the 16-bit range -> [frames, dim]."""

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Waveform (float, [-1, 1], at ``sample_rate``) -> features ``[frames, dim]`` float32."""
        if len(wave) < self.window_size:
            raise ValueError(f"too short: {len(wave)} samples, one frame needs "
                             f"{self.window_size}")
        import torch

        samples = torch.from_numpy(np.asarray(wave, dtype=np.float32)).unsqueeze(0)
        with torch.inference_mode():
            feats = self._features(samples * INT16_SCALE)
        return np.ascontiguousarray(feats.numpy(), dtype=np.float32)

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        """``_compute``, with any dither drawn from a generator seeded by ``wave`` itself."""
        if not self.dither:
            return self._compute(wave)
        import torch

        seed = hashlib.blake2b(wave.numpy().tobytes(), digest_size=8).digest()
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(seed, "little") >> 1)
            return self._compute(wave)

    def cost(self, feats: np.ndarray) -> float:
        return len(feats) * self.window_shift / self.sample_rate

    def batch_cost(self, costs) -> float:
        return sum(costs)  # nothing is padded: forward only returns what prepare computed

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        return list(batch)


@register("fbank")
class FbankExtractor(_KaldiFeatsExtractor):
    """Kaldi log mel filterbank energies, ``[frames, num_mel_bins]``."""

    options = (Option("num_mel_bins", int, 80, "mel bins", check=positive), *FRAME_OPTIONS)

    def __init__(self, model: Optional[str] = None, device: str = "cpu", num_mel_bins: int = 80,
                 frame_length: float = 25.0, frame_shift: float = 10.0, dither: float = 0.0,
                 sample_rate: int = 16000):
        self.num_mel_bins = int(num_mel_bins)
        if self.num_mel_bins < 1:
            raise OptionError(f"num_mel_bins must be >= 1, got {num_mel_bins}")
        super().__init__(model, device, frame_length, frame_shift, dither, sample_rate)

    def _compute(self, wave: torch.Tensor) -> torch.Tensor:
        from torchaudio.compliance import kaldi

        return kaldi.fbank(wave, num_mel_bins=self.num_mel_bins, **self._options())


@register("mfcc")
class MfccExtractor(_KaldiFeatsExtractor):
    """Kaldi MFCCs (C0 first, liftered, no energy term), ``[frames, num_ceps]``."""

    options = (Option("num_mel_bins", int, 23, "mel bins", check=positive),
               Option("num_ceps", int, 13, "cepstra (at most num_mel_bins)", check=positive),
               *FRAME_OPTIONS)

    @classmethod
    def check(cls, model, options):
        if options["num_ceps"] > options["num_mel_bins"]:
            raise OptionError(f"--num_ceps {options['num_ceps']} cannot exceed --num_mel_bins "
                              f"{options['num_mel_bins']}")
        return super().check(model, options)

    def __init__(self, model: Optional[str] = None, device: str = "cpu", num_mel_bins: int = 23,
                 num_ceps: int = 13, frame_length: float = 25.0, frame_shift: float = 10.0,
                 dither: float = 0.0, sample_rate: int = 16000):
        self.num_mel_bins = int(num_mel_bins)
        self.num_ceps = int(num_ceps)
        if self.num_mel_bins < 1 or self.num_ceps < 1:
            raise OptionError(f"num_mel_bins and num_ceps must be >= 1, got {num_mel_bins} "
                              f"and {num_ceps}")
        if self.num_ceps > self.num_mel_bins:
            raise OptionError(f"num_ceps ({num_ceps}) cannot exceed num_mel_bins "
                              f"({num_mel_bins})")
        super().__init__(model, device, frame_length, frame_shift, dither, sample_rate)

    def _compute(self, wave: torch.Tensor) -> torch.Tensor:
        from torchaudio.compliance import kaldi

        return kaldi.mfcc(wave, num_mel_bins=self.num_mel_bins, num_ceps=self.num_ceps,
                          **self._options())
