"""``wav.scp`` entries to mono float32 waveforms at the rate a model wants.

Entry forms (Kaldi's): a file path; a shell pipe ending in ``|`` whose stdout is an audio file;
an ark offset ``foo.ark:123`` holding a wav (as Kaldi's ``wav-copy`` writes). Files are decoded
with soundfile (WAV, FLAC, MP3, OGG, ...). Mono policy: multi-channel audio is averaged over
channels, as librosa, Resemblyzer and SpeechBrain's audio normaliser do.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
from typing import Dict, Tuple

import numpy as np
import soundfile
import torch
import torchaudio

from speechdump.data import Utterance

_ARK_OFFSET = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)$")


class UtteranceError(Exception):
    """An utterance cannot be used (unreadable, empty, too short...): says which, its file, and why."""

    def __init__(self, utt_id: str, source: str, reason: str):
        super().__init__(f"utterance '{utt_id}' ({source.strip()}): {reason}")
        self.utt_id = utt_id
        self.source = source.strip()
        self.reason = reason


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


def read_samples(utt: Utterance) -> Tuple[np.ndarray, int]:
    """Decodes one utterance (its segment only) to ``(samples[T, C] float32, rate)``."""
    source = utt.source.strip()
    if source.endswith("|"):
        samples, rate = _read_pipe(source[:-1])
    elif os.path.exists(source):
        if os.path.getsize(source) == 0:
            raise ValueError("the file is empty (0 bytes)")
        try:
            with soundfile.SoundFile(source) as f:
                # Only the segment (the whole file when there is none), clipped to the recording.
                # The seek happens even at 0: libmpg123 decodes an MP3 1 ulp differently
                # without it, and soundfile.read, used before, always sought.
                end = None if utt.end is None else int(round(utt.end * f.samplerate))
                start, end, _ = slice(int(round(utt.start * f.samplerate)), end).indices(f.frames)
                f.seek(start)
                return (f.read(max(end - start, 0), dtype="float32", always_2d=True),
                        f.samplerate)
        except soundfile.LibsndfileError:
            # libsndfile says only "System error" for a file it may not open: let the OS say
            # why (permission denied); a file that opens is a decoding error, raised as is.
            open(source, "rb").close()
            raise
    elif _ARK_OFFSET.match(source) and os.path.exists(_ARK_OFFSET.match(source)["ark"]):
        samples, rate = _read_ark(source)
    else:
        raise FileNotFoundError("no such file")
    if utt.is_segment:
        end = None if utt.end is None else int(round(utt.end * rate))
        samples = samples[int(round(utt.start * rate)):end]
    return samples, rate


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
        self._resamplers: Dict[tuple, torchaudio.transforms.Resample] = {}

    def get(self, source_rate: int, target_rate: int, device="cpu",
            dtype=torch.float32) -> torchaudio.transforms.Resample:
        key = (int(source_rate), int(target_rate), str(torch.device(device)), dtype)
        with self._lock:
            resampler = self._resamplers.get(key)
            if resampler is None:
                resampler = torchaudio.transforms.Resample(
                    int(source_rate), int(target_rate), dtype=dtype, **self.FILTER).to(device)
                self._resamplers[key] = resampler
        return resampler

    def resample(self, wave: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
        if source_rate == target_rate:
            return wave
        with torch.no_grad():
            return self.get(source_rate, target_rate, wave.device, wave.dtype)(wave)

    def __len__(self) -> int:
        return len(self._resamplers)


def load_audio(utt: Utterance, target_rate: int, resamplers: ResamplerCache) -> np.ndarray:
    """One utterance as a mono float32 waveform at ``target_rate``; UtteranceError names what is wrong."""
    try:
        samples, rate = read_samples(utt)
    except Exception as exc:  # soundfile, subprocess and kaldiio each raise their own types
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UtteranceError(utt.utt_id, utt.source, f"cannot read audio: {reason}") from exc
    if samples.shape[0] == 0:
        raise UtteranceError(utt.utt_id, utt.source, "no samples (empty audio or segment)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise UtteranceError(utt.utt_id, utt.source, "audio holds NaN or Inf samples")
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    return resamplers.resample(wave, rate, target_rate).numpy()
