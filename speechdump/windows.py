"""Windows over long audio, shared by the frame-level encoders (ssl, whisper, w2v_bert).

Every window is run as an utterance of its own (the extractor's own preprocessing, e.g.
normalisation or log-mel, of the window's samples alone); what differs is where windows lie and
what is kept of them. All positions are in samples; ``--window_seconds W --hop_seconds H``.

* Sliding windows (``window_starts``; ``--window_seconds`` without ``--causal``): windows of W
  start every H from 0; when the last of them ends before the audio does, one more starts at
  the first multiple of ``unit`` from which it reaches the audio's end (``unit`` = 1: it ends
  exactly there, and is W long; ``unit`` = the model's frame step, for stitching: it stays on
  the frame grid, and is at most ``unit - 1`` samples short of W). Audio no longer than W is
  one window, all of it.
* Causal windows (``causal_windows``; ``--causal true``): one window per time stamp
  t = H, 2H, 3H, ... up to the audio's end, holding the audio in [max(0, t - W), t]: never a
  later sample. A final partial hop (the audio ends after the last multiple of H) gets one more
  stamp, at the audio's end, so the end of the audio is always a stamp; audio shorter than H is
  one stamp at its end. The first windows (t < W) are shorter than W: the ``times`` stream
  ([windows, 2]: start, end in seconds) says so.
* Stitching (``stitch_bounds``; ``--pool none`` with windows): windows start on the output
  frame grid (H is rounded to whole frames), so frame j of a window starting at frame s is
  frame s + j of the utterance. Where two consecutive windows overlap, the overlap's first half
  (rounded down) comes from the earlier window and the rest from the later one: each frame is
  taken from the window in which it is farthest from an edge. The result is one sequence with
  the utterance's own frame count (the frame-count formula is ``f(n) = f(n - s * unit) + s``
  for these models, so the last window's frames end where the utterance's do; checked).

``encode_windows`` runs the windows of a batch of utterances through the model: length-sorted,
in forward passes of at most ``max_seconds`` of (padded) audio, slicing each window out of its
utterance only when its pass runs, so memory holds one pass of windows and hidden states and
what is kept (``pooled``: one vector per window and layer; ``stitched``: the stitched frames),
never all windows at once: 6000 causal windows of 16 s (96000 s of window audio) of a 10-minute
recording run in the memory of a few passes (bench/windows.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from speechdump.batching import plan_batches
from speechdump.errors import OptionError
from speechdump.extractors.base import Option, positive
from speechdump.lazy import torch

POOLED, STITCHED, CAUSAL = "pooled", "stitched", "causal"

# The window options of ssl and w2v_bert (whisper declares its own --hop_seconds).
WINDOW_SECONDS = Option("window_seconds", float, None, "windows of this many seconds, each run "
                        "alone: pooled per window (--pool mean|last), stitched into one frame "
                        "sequence (--pool none), or causal (--causal true)", check=positive)
HOP_SECONDS = Option("hop_seconds", float, None, "a window starts (or, causal, ends) every this "
                     "many seconds (default: window_seconds)", check=positive)
CAUSAL_OPTION = Option("causal", bool, False, "with --window_seconds W --hop_seconds H: one "
                       "vector per time stamp t = H, 2H, ... (and the audio's end) from the "
                       "audio in [t - W, t] only")


def window_mode(options: Dict, hop_needs_window: bool = True,
                max_window: Optional[float] = None) -> Optional[str]:
    """Pre-flight of ``--window_seconds``, ``--hop_seconds``, ``--causal`` and ``--pool``:
    None (no windows), POOLED, STITCHED or CAUSAL; OptionError for what does not fit."""
    window, hop = options.get("window_seconds"), options.get("hop_seconds")
    causal, pool = bool(options.get("causal")), options.get("pool")
    if causal and window is None:
        raise OptionError("--causal true needs --window_seconds W (each time stamp t sees the "
                          "audio in [t - W, t]) and --hop_seconds H (stamps every H s)")
    if causal and pool == "none":
        raise OptionError("--causal true gives one vector per time stamp: --pool none does not "
                          "apply; choose --pool last or --pool mean")
    if window is None:
        if hop is not None and hop_needs_window:
            raise OptionError("--hop_seconds needs --window_seconds")
        return None
    if max_window is not None and window > max_window:
        raise OptionError(f"--window_seconds {window}: at most {max_window:g} s for this model")
    if causal:
        return CAUSAL
    if pool == "none":
        if hop is not None and hop > window:
            raise OptionError(f"--hop_seconds {hop} > --window_seconds {window}: with --pool "
                              f"none the windows' frames are stitched into one sequence, so "
                              f"consecutive windows must overlap or touch")
        return STITCHED
    return POOLED


def window_starts(samples: int, window: int, hop: int, unit: int = 1) -> List[int]:
    """Start samples of sliding windows: every ``hop`` from 0, then one starting at the first
    multiple of ``unit`` from which a window reaches the end; [0] if one window holds it all."""
    if samples <= window:
        return [0]
    last = -(-(samples - window) // unit) * unit
    return list(range(0, last, hop)) + [last]


def causal_windows(samples: int, window: int, hop: int) -> "tuple[np.ndarray, np.ndarray]":
    """(starts, ends) of the causal windows: ends (the stamps) every ``hop`` up to ``samples``,
    plus ``samples`` itself when it is not a multiple of ``hop``; starts ``max(0, end - window)``.
    """
    ends = np.arange(hop, samples + 1, hop, dtype=np.int64)
    if len(ends) == 0 or ends[-1] < samples:
        ends = np.append(ends, np.int64(samples))  # the final partial hop: a stamp at the end
    return np.maximum(ends - window, 0), ends


def stitch_bounds(starts: Sequence[int], frames: Sequence[int]) -> List[range]:
    """The frames (relative to each window) each window contributes, for windows starting at
    frame ``starts[k]`` with ``frames[k]`` frames: cuts in the middle of each overlap of
    consecutive windows, the first half (rounded down) to the earlier one."""
    cuts = [starts[0]]
    for k in range(len(starts) - 1):
        cuts.append((starts[k + 1] + starts[k] + frames[k]) // 2)
    cuts.append(starts[-1] + frames[-1])
    return [range(cuts[k] - starts[k], cuts[k + 1] - starts[k]) for k in range(len(starts))]


@dataclass
class Windows:
    """One utterance in window mode: its waveform and each window's [start, end) in samples."""

    wave: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def sizes(self) -> np.ndarray:
        return self.ends - self.starts

    def times(self, rate: int) -> np.ndarray:
        """[windows, 2]: (start, end) in seconds, float32 (a stream kept exact)."""
        return (np.stack([self.starts, self.ends], axis=1).astype(np.float64) / rate
                ).astype(np.float32)


def sliding(wave: np.ndarray, window: int, hop: int, unit: int = 1) -> Windows:
    starts = np.asarray(window_starts(len(wave), window, hop, unit), dtype=np.int64)
    return Windows(wave, starts, np.minimum(starts + window, len(wave)))


def causal(wave: np.ndarray, window: int, hop: int) -> Windows:
    starts, ends = causal_windows(len(wave), window, hop)
    return Windows(wave, starts, ends)


# encode: raw window waveforms -> per window {layer: [true frames, dim]} from one forward pass
# (views of the batch are fine: whatever is kept is copied).
Encode = Callable[[List[np.ndarray]], List[Dict[int, "torch.Tensor"]]]


def encode_windows(items: Sequence[Windows], encode: Encode, keep: Callable, rate: int,
                   max_seconds: float, max_items: Optional[int] = None,
                   equal_only: bool = False) -> None:
    """Every window of ``items`` through ``encode``, ``keep(item, window, states)`` called for
    each: length-sorted passes of at most ``max_seconds`` padded seconds and ``max_items``
    windows (``equal_only``: windows of one length per pass, for models that cannot be told
    lengths). Windows are sliced out of their waveform only for their pass."""
    pieces = [(i, k) for i, item in enumerate(items) for k in range(len(item))]
    costs = [float(items[i].ends[k] - items[i].starts[k]) / rate for i, k in pieces]
    for indices in plan_batches(costs, max_seconds, max_items or max(len(pieces), 1),
                                equal_only=equal_only):
        waves = []
        for j in indices:
            i, k = pieces[j]
            waves.append(items[i].wave[int(items[i].starts[k]):int(items[i].ends[k])])
        for j, states in zip(indices, encode(waves)):
            keep(*pieces[j], states)


def pooled(items: Sequence[Windows], encode: Encode, pool: str, rate: int, **plan
           ) -> List[Dict[int, torch.Tensor]]:
    """Per item {layer: [windows, dim]}: each window's last true frame (``pool`` last) or the
    mean of its true frames (mean), written into one buffer per item and layer."""
    out: List[Dict[int, torch.Tensor]] = [{} for _ in items]

    def keep(i: int, k: int, states: Dict[int, torch.Tensor]) -> None:
        for n, h in states.items():
            if n not in out[i]:
                out[i][n] = h.new_empty((len(items[i]), h.shape[-1]))
            out[i][n][k] = h[-1] if pool == "last" else h.mean(dim=0)

    encode_windows(items, encode, keep, rate, **plan)
    return out


def stitched(items: Sequence[Windows], encode: Encode, num_frames: Callable[[int], int],
             unit: int, rate: int, **plan) -> List[Dict[int, torch.Tensor]]:
    """Per item {layer: [num_frames(samples), dim]}: the frames of sliding windows that start on
    the frame grid (multiples of ``unit`` samples), stitched by ``stitch_bounds``."""
    layout = []
    for item in items:
        if np.any(item.starts % unit):
            raise ValueError(f"stitched windows must start on the {unit}-sample frame grid")
        starts = [int(s) // unit for s in item.starts]
        frames = [num_frames(int(n)) for n in item.sizes()]
        total = num_frames(len(item.wave))
        if starts[-1] + frames[-1] != total:
            raise RuntimeError(f"windows end at frame {starts[-1] + frames[-1]}, the utterance "
                               f"at {total}")
        layout.append((starts, frames, stitch_bounds(starts, frames), total))
    out: List[Dict[int, torch.Tensor]] = [{} for _ in items]

    def keep(i: int, k: int, states: Dict[int, torch.Tensor]) -> None:
        starts, frames, bounds, total = layout[i]
        b = bounds[k]
        for n, h in states.items():
            if len(h) != frames[k]:
                raise RuntimeError(f"a window gave {len(h)} frames where its length formula "
                                   f"says {frames[k]}")
            if n not in out[i]:
                out[i][n] = h.new_empty((total, h.shape[-1]))
            out[i][n][starts[k] + b.start:starts[k] + b.stop] = h[b.start:b.stop]

    encode_windows(items, encode, keep, rate, **plan)
    return out


def stitch_hop(hop_seconds: Optional[float], rate: int, unit: int, window_frames: int) -> int:
    """``--hop_seconds`` of stitched windows, rounded to whole frames -> samples (unset: a
    window's frame count, so windows touch); OptionError when it rounds to no frame or leaves
    frames between two windows."""
    if hop_seconds is None:
        return window_frames * unit
    frames = round(hop_seconds * rate / unit)
    if not 1 <= frames <= window_frames:
        raise OptionError(f"--hop_seconds {hop_seconds}: stitched windows start on the "
                          f"{unit / rate:g} s frame grid and must overlap or touch: between "
                          f"{unit / rate:g} and {window_frames * unit / rate:g} s for this window")
    return frames * unit


def seconds_to_samples(seconds: float, rate: int) -> int:
    return int(round(seconds * rate))


def check_causal_hop(hop: int, min_samples: int, rate: int) -> None:
    """The first causal window holds only H s: it must be long enough for one frame."""
    if hop < min_samples:
        raise OptionError(f"--hop_seconds {hop / rate:g}: with --causal true the first window "
                          f"holds only the first H s; the model needs at least "
                          f"{math.ceil(min_samples) / rate:g} s")
