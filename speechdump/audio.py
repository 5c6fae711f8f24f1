"""``wav.scp`` entries to mono float32 waveforms at the rate a model wants.

Entry forms: Kaldi's (a file path; a shell pipe ending in ``|`` whose stdout is an audio file;
an ark offset ``foo.ark:123`` holding a wav, as Kaldi's ``wav-copy`` writes), and members of the
files corpora ship as (tar shards, parquet rows: ``speechdump.containers``), decoded from memory.
Files are decoded with soundfile (WAV, FLAC, MP3, OGG, ...). Mono policy: multi-channel audio
is averaged over channels, as librosa, Resemblyzer and SpeechBrain's audio normaliser do, unless
``--channel N`` picks one (0: the first, as Kaldi's ``--channel``).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import threading
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio

from speechdump import compat, containers
from speechdump.data import Utterance
from speechdump.errors import UtteranceError
from speechdump.kaldi_io import ark_offset


def _read_pipe(command: str) -> Tuple[np.ndarray, int]:
    # Kaldi convention: the wav.scp author wrote a shell command, so a shell runs it.
    # The command text comes from wav.scp verbatim; nothing is ever formatted into it.
    proc = subprocess.run(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"pipe command exited with code {proc.returncode}"
                         + (f": {err[-1]}" if err else ""))
    if not proc.stdout:
        raise ValueError("pipe command printed nothing")
    return soundfile.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)


def _read_ark(entry: str) -> Tuple[np.ndarray, int]:
    import kaldiio

    loaded = kaldiio.load_mat(entry)
    if not isinstance(loaded, tuple):
        raise ValueError("the ark entry holds a matrix, not a wav")
    rate, samples = loaded
    samples = np.asarray(samples)
    if samples.dtype == np.int16:  # Kaldi stores wavs as 16-bit integers
        samples = samples.astype(np.float32) / 32768.0
    samples = samples.astype(np.float32)
    return (samples[:, None] if samples.ndim == 1 else samples), int(rate)


# Seconds a segment may end past its recording before it is an error: Kaldi's extract-segments
# --max-overshoot. Within it the segment is clipped at the recording's end, with a log line.
MAX_OVERSHOOT = 0.5
# Frames an MPEG (MP3) stream may decode short of what libsndfile counts for it: one MPEG frame,
# as decoders differ on the padding of the last one.
MPEG_SLACK = 1152

log = logging.getLogger(__name__)


def wav_declared_frames(source: Union[str, BinaryIO]) -> Optional[int]:
    """Frames the data chunk of a RIFF/WAVE file (a path, or a binary file object, read from
    its start and left there) declares, from its header; None where the file is not RIFF/WAVE
    or declares a streaming size (0 or 0xFFFFFFFF, written before the length was known).
    libsndfile clips the frame count of a truncated WAV to what the file holds, without an
    error: this is what the header promised."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            return wav_declared_frames(f)
    source.seek(0)
    try:
        return _declared_frames(source)
    finally:
        source.seek(0)


def _declared_frames(f: BinaryIO) -> Optional[int]:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align = None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"fmt ":
            fmt = f.read(size + (size & 1))
            block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
        elif chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or not block_align:
                return None
            return size // block_align
        else:
            f.seek(size + (size & 1), os.SEEK_CUR)


def _segment_bounds(utt: Utterance, rate: int, frames: int,
                    max_overshoot: float) -> Tuple[int, int]:
    """``[start, end)`` in frames of ``utt`` in a recording of ``frames``: the whole recording
    without a segment; a segment ending up to ``max_overshoot`` seconds past the recording is
    clipped there (logged), further is a ValueError, as is one starting past the end."""
    start = int(round(utt.start * rate))
    end = frames if utt.end is None else int(round(utt.end * rate))
    if start >= frames:
        raise ValueError(f"the segment starts at {utt.start:.2f} s, after the recording ends "
                         f"({frames / rate:.2f} s)")
    if end > frames:
        over = (end - frames) / rate
        if over > max_overshoot:
            raise ValueError(f"the segment ends at {utt.end:.2f} s, {over:.2f} s past the end of "
                             f"the recording ({frames / rate:.2f} s; at most {max_overshoot} s "
                             f"is clipped)")
        log.warning("utterance %s: the segment ends %.3f s past the end of the recording "
                    "(%.2f s): clipped there", utt.utt_id, over, frames / rate)
        end = frames
    return start, end


def _read_file(path: Union[str, BinaryIO], utt: Utterance,
               max_overshoot: float) -> Tuple[np.ndarray, int]:
    """The utterance's frames of an audio file (a path, or the bytes of one): only its segment
    is decoded, and every frame the container promises for it must decode (a truncated file is
    an error, not a short read)."""
    declared = wav_declared_frames(path)  # None unless RIFF/WAVE; read before libsndfile is
    with soundfile.SoundFile(path) as f:
        frames = f.frames
        if f.format in ("WAV", "WAVEX"):
            if declared is not None and declared > frames:
                raise ValueError(f"truncated: the WAV header declares {declared} frames "
                                 f"({declared / f.samplerate:.2f} s), the file holds {frames} "
                                 f"({frames / f.samplerate:.2f} s)")
        start, end = _segment_bounds(utt, f.samplerate, frames, max_overshoot)
        # The seek happens even at 0: libmpg123 decodes an MP3 1 ulp differently without it,
        # and soundfile.read, used before, always sought.
        f.seek(start)
        samples = f.read(end - start, dtype="float32", always_2d=True)
        slack = MPEG_SLACK if f.format == "MPEG" else 0
        if len(samples) + slack < end - start:
            raise ValueError(f"truncated: {end - start} frames expected from "
                             f"{start / f.samplerate:.2f} s on, {len(samples)} decoded")
        return samples, f.samplerate


def read_samples(utt: Utterance, max_overshoot: float = MAX_OVERSHOOT) -> Tuple[np.ndarray, int]:
    """Decodes one utterance (its segment only) to ``(samples[T, C] float32, rate)``; a segment
    past the recording's end by more than ``max_overshoot`` seconds, or a truncated file, is a
    ValueError."""
    source = utt.source.strip()
    container = containers.parse(source)
    if container is not None:
        return _read_file(io.BytesIO(containers.read_bytes(container)), utt, max_overshoot)
    if source.endswith("|"):
        samples, rate = _read_pipe(source[:-1])
    elif os.path.exists(source):
        if os.path.getsize(source) == 0:
            raise ValueError("the file is empty (0 bytes)")
        try:
            return _read_file(source, utt, max_overshoot)
        except soundfile.LibsndfileError:
            # libsndfile says only "System error" for a file it may not open: let the OS say
            # why (permission denied); a file that opens is a decoding error, raised as is.
            open(source, "rb").close()
            raise
    elif ark_offset(source) and os.path.exists(ark_offset(source)[0]):
        samples, rate = _read_ark(source)
    else:
        raise FileNotFoundError("no such file")
    if utt.is_segment:
        start, end = _segment_bounds(utt, rate, len(samples), max_overshoot)
        samples = samples[start:end]
    return samples, rate


class _Product(NamedTuple):
    """One matrix product of a resampling: input rows ``m + shift``, taps ``start:end`` of each,
    times ``weights`` give outputs ``first:first + weights.shape[1]`` of output row ``m``."""
    first: int
    shift: int
    start: int
    end: int
    weights: torch.Tensor  # [end - start, output columns]


class SincResampler:
    """torchaudio's windowed-sinc resampler (its kernel, its output), computed as matrix products.

    torchaudio convolves the wave with one kernel row per output phase at a stride of ``orig``
    input samples (``orig:new``: the two rates in lowest terms). On CPU, that convolution builds
    a oneDNN kernel for every new input length (about 2 ms, so once per utterance), and for
    integer ratios such as 48 -> 16 kHz it has one output channel, which runs 10x slower per
    tap. Here the padded wave is viewed, without a copy, as rows of ``stride`` samples, and the
    convolution is a sum of row-shifted matrix products (BLAS; nothing built per length):

    - where there are few phases, one row holds ``block`` periods (the kernel rows repeat,
      shifted by ``orig``), so the products stay wide;
    - where there are many (441:160 for 44.1 kHz), each group of outputs multiplies only the
      taps inside its window: torchaudio's rows are twice as long as the window and more, the
      rest holding the 1e-14 its clamped sinc leaves there.
    """

    COLUMNS = 16  # outputs per product: narrower products get slow, wider ones waste taps
    OUTSIDE = 1e-10  # taps below this fraction of the largest lie outside the window

    def __init__(self, source_rate: int, target_rate: int, dtype: torch.dtype, filter: dict):
        base = torchaudio.transforms.Resample(source_rate, target_rate, dtype=dtype, **filter)
        compat.require_resample_internals(base)  # what follows reads them
        self.orig, self.new = base.orig_freq // base.gcd, base.new_freq // base.gcd
        self.width = base.width
        block = -(-self.COLUMNS // self.new)
        self.stride = self.orig * block
        kernel = base.kernel[:, 0]  # [new, 2 * width + orig]
        phases, taps = kernel.shape
        self.columns = phases * block
        blocked = kernel.new_zeros(self.columns, taps + self.orig * (block - 1))
        for period in range(block):
            shift = period * self.orig
            blocked[period * phases:(period + 1) * phases, shift:shift + taps] = kernel
        inside = blocked.abs() > blocked.abs().max() * self.OUTSIDE
        self.products: List[_Product] = []
        for first in range(0, self.columns, self.COLUMNS):
            group = slice(first, first + self.COLUMNS)
            used = inside[group].any(dim=0).nonzero()
            lo, hi = int(used[0]), int(used[-1]) + 1
            for shift in range(lo // self.stride, (hi - 1) // self.stride + 1):
                start, end = max(lo, shift * self.stride), min(hi, (shift + 1) * self.stride)
                self.products.append(_Product(first, shift, start - shift * self.stride,
                                              end - shift * self.stride,
                                              blocked[group, start:end].T.contiguous()))
        self.shifts = 1 + max(product.shift for product in self.products)
        # Once per resampler: its output must be torchaudio's, or torchaudio's internals changed.
        compat.verify_resampler(self, source_rate, target_rate, dtype,
                                4 * (self.stride + self.width) + 1, filter)

    def to(self, device) -> "SincResampler":
        self.products = [p._replace(weights=p.weights.to(device)) for p in self.products]
        return self

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """``[..., time]`` at the source rate -> ``[..., ceil(time * new / orig)]``."""
        leading, length = wave.shape[:-1], wave.shape[-1]
        target = -(-self.new * length // self.orig)
        # torchaudio's zero padding, plus zeros that only complete the last rows.
        padded = torch.nn.functional.pad(wave.reshape(-1, length),
                                         (self.width, self.width + 2 * self.stride))
        num_rows = padded.shape[-1] // self.stride
        count = num_rows - self.shifts + 1
        outputs = []
        for one in padded:
            rows = one[:num_rows * self.stride].view(num_rows, self.stride)
            out = rows.new_zeros(count, self.columns)
            for p in self.products:
                out[:, p.first:p.first + p.weights.shape[1]].addmm_(
                    rows[p.shift:p.shift + count, p.start:p.end], p.weights)
            outputs.append(out.reshape(-1)[:target])
        return torch.stack(outputs).reshape(*leading, target)


class ResamplerCache:
    """One resampler per (source rate, target rate, device, dtype), shared by loader threads.

    Building a resampler computes its sinc kernel, so it is done once per key, under a lock;
    applying it is a pure convolution, safe to run from many threads at once.
    """

    # Kaiser-windowed sinc with a wide filter ("kaiser_best"): near-transparent for speech.
    FILTER = dict(lowpass_filter_width=64, rolloff=0.9475937167399596,
                  resampling_method="sinc_interp_kaiser", beta=14.769656459379492)

    def __init__(self):
        self._lock = threading.Lock()
        self._resamplers: Dict[tuple, SincResampler] = {}

    def get(self, source_rate: int, target_rate: int, device="cpu",
            dtype=torch.float32) -> SincResampler:
        key = (int(source_rate), int(target_rate), str(torch.device(device)), dtype)
        with self._lock:
            resampler = self._resamplers.get(key)
            if resampler is None:
                resampler = SincResampler(int(source_rate), int(target_rate), dtype,
                                          self.FILTER).to(device)
                self._resamplers[key] = resampler
        return resampler

    def resample(self, wave: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
        if source_rate == target_rate:
            return wave
        with torch.no_grad():
            return self.get(source_rate, target_rate, wave.device, wave.dtype)(wave)

    def __len__(self) -> int:
        return len(self._resamplers)


def downmix(samples: np.ndarray) -> np.ndarray:
    """``[T, C]`` -> ``[T]``: the mean over channels, ``samples.mean(axis=1)``'s values.

    Summed channel by channel, as numpy sums so few terms; its reduction along the short
    interleaved axis takes 6 ns a sample, as long as decoding the file."""
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    mono = samples[:, 0] + samples[:, 1]
    for channel in range(2, channels):
        mono += samples[:, channel]
    mono /= channels
    return mono


def used_channels(samples: np.ndarray, channel: str = "mean") -> np.ndarray:
    """``[T, C]`` -> the channels ``channel`` takes (see ``select_channel``): all of them, or
    ``[T, 1]``; ValueError for a channel the audio does not have."""
    if channel == "mean":
        return samples
    index = int(channel)
    if index >= samples.shape[1]:
        raise ValueError(f"--channel {index}: the audio has {samples.shape[1]} channel(s), "
                         f"numbered from 0")
    return samples[:, index:index + 1]


def select_channel(samples: np.ndarray, channel: str = "mean") -> np.ndarray:
    """``[T, C]`` -> ``[T]``: the mean of the channels, or channel ``int(channel)`` (0: the
    first, as Kaldi's ``--channel``); ValueError for a channel the audio does not have."""
    return downmix(used_channels(samples, channel))


def decode_audio(utt: Utterance, channel: str = "mean",
                 max_overshoot: float = MAX_OVERSHOOT) -> Tuple[np.ndarray, int]:
    """One utterance as decoded, before any resampling: ``(samples[T, C'] float32, rate)``, the
    channels ``channel`` takes (see ``used_channels``); UtteranceError names what is wrong."""
    try:
        samples, rate = read_samples(utt, max_overshoot)
    except Exception as exc:  # soundfile, subprocess and kaldiio each raise their own types
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UtteranceError(utt.utt_id, utt.source, f"cannot read audio: {reason}") from exc
    if samples.shape[0] == 0:
        raise UtteranceError(utt.utt_id, utt.source, "no samples (empty audio or segment)")
    try:
        return used_channels(samples, channel), rate
    except ValueError as exc:
        raise UtteranceError(utt.utt_id, utt.source, str(exc)) from exc


def to_mono(utt: Utterance, samples: np.ndarray, rate: int, target_rate: int,
            resamplers: ResamplerCache) -> np.ndarray:
    """``decode_audio``'s samples as a mono float32 waveform at ``target_rate`` (the mean of
    the channels); UtteranceError for NaN or Inf samples."""
    mono = downmix(samples)
    if not np.isfinite(mono).all():
        raise UtteranceError(utt.utt_id, utt.source, "audio holds NaN or Inf samples")
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    return resamplers.resample(wave, rate, target_rate).numpy()


def load_audio(utt: Utterance, target_rate: int, resamplers: ResamplerCache,
               channel: str = "mean", max_overshoot: float = MAX_OVERSHOOT) -> np.ndarray:
    """One utterance as a mono float32 waveform at ``target_rate`` (``channel``: see
    ``select_channel``; ``max_overshoot``: see ``read_samples``); UtteranceError names what
    is wrong."""
    samples, rate = decode_audio(utt, channel, max_overshoot)
    return to_mono(utt, samples, rate, target_rate, resamplers)
