"""Merging per-job scps, aligning them with the data dir, and checking the result.

Shared by every stage: the final scp holds exactly the reference ids (``text``'s, or
``wav.scp``'s when there is no text), in the reference order, one line each, every array of
the same trailing dimension and finite.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from speechdump.data import read_table
from speechdump.errors import AlignmentError, ArkFormatError
from speechdump.kaldi_io import read_scp_arrays


def _some(ids: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def merge_scps(paths: Iterable[str]) -> Dict[str, str]:
    """Union of several scps (key -> ark location); a key in two of them is an error."""
    merged: Dict[str, str] = {}
    read: List[str] = []
    for path in paths:
        table = read_table(path)
        before = len(merged)
        merged.update(table)
        if len(merged) != before + len(table):  # rare: re-read the earlier scps to say where
            for earlier in read:
                shared = sorted(table.keys() & read_table(earlier).keys())
                if shared:
                    raise AlignmentError(f"'{shared[0]}' is in both {earlier} and {path}")
        read.append(path)
    return merged


@dataclass
class Alignment:
    entries: List[Tuple[str, str]]  # (id, location) in reference order
    dropped: List[str]  # extracted but not in the reference: left out
    missing: List[str]  # in the reference with no output


def align(entries: Dict[str, str], reference: Sequence[str]) -> Alignment:
    kept = [(key, entries[key]) for key in reference if key in entries]
    missing, dropped = [], []
    # The usual case, every reference id extracted and nothing else, needs no second pass.
    if len(kept) != len(reference):
        missing = [key for key in reference if key not in entries]
    if len(kept) != len(entries):
        ref = set(reference)
        dropped = [key for key in entries if key not in ref]
    return Alignment(entries=kept, dropped=dropped, missing=missing)


def require_complete(alignment: Alignment, excused: Optional[Dict[str, str]] = None) -> None:
    """Fails when a reference id has no output, unless it is excused (e.g. listed in bad_utts)."""
    missing = [key for key in alignment.missing if key not in (excused or {})]
    if missing:
        raise AlignmentError(f"{len(missing)} ids have no output: {_some(missing)}")


class _FiniteCheck:
    """NaN and Inf checks a chunk of arrays at a time: one numpy call per array cost a
    million-vector merge 1.2 s. Raises naming the first array that is not finite."""

    MAX_ARRAYS, MAX_VALUES = 4096, 1 << 20

    def __init__(self, scp_path: str):
        self.scp_path = scp_path
        self.keys: List[str] = []
        self.arrays: List[np.ndarray] = []
        self.values = 0

    def add(self, key: str, array: np.ndarray) -> None:
        self.keys.append(key)
        self.arrays.append(array)
        self.values += array.size
        if len(self.arrays) >= self.MAX_ARRAYS or self.values >= self.MAX_VALUES:
            self.check()

    def check(self) -> None:
        """Checks the arrays added since the last check."""
        if self.arrays and not np.isfinite(np.concatenate([a.ravel() for a in self.arrays])).all():
            key = next(k for k, a in zip(self.keys, self.arrays) if not np.isfinite(a).all())
            raise AlignmentError(f"{self.scp_path}: '{key}' holds NaN or Inf")
        self.keys, self.arrays, self.values = [], [], 0


def validate_scp(scp_path: str, reference: Sequence[str],
                 num_frames: Optional[Dict[str, str]] = None,
                 each: Optional[Callable[[str, np.ndarray], None]] = None,
                 dtype=None) -> Tuple[int, ...]:
    """Reads every array back; returns the common trailing shape. Raises naming the first bad id.

    With ``num_frames`` (utt2num_frames), every array must have that many rows (frames or
    tokens), and only the axes after the first must agree. With ``dtype``, every array must
    be of that type (int streams: int32). ``each`` is
    called with every (key, array) in order, for work that needs the arrays too; the NaN and
    Inf check of a chunk may come after it, and when that fails, the call raises.
    """
    keys: List[str] = []
    shape: Optional[Tuple[int, ...]] = None
    first_key = None
    finite = _FiniteCheck(scp_path)
    try:
        for key, array in read_scp_arrays(scp_path):
            keys.append(key)
            finite.add(key, array)
            if num_frames is not None and array.shape[0] != int(num_frames.get(key, -1)):
                finite.check()  # an earlier id that is not finite is named first
                raise AlignmentError(f"{scp_path}: '{key}' has {array.shape[0]} frames, "
                                     f"utt2num_frames says {num_frames.get(key)}")
            if dtype is not None and array.dtype != dtype:
                finite.check()
                raise AlignmentError(f"{scp_path}: '{key}' is {array.dtype}, not {dtype}")
            trailing = array.shape[1:] if num_frames is not None else array.shape
            if shape is None:
                shape, first_key = trailing, key
            elif trailing != shape:
                finite.check()
                raise AlignmentError(f"{scp_path}: '{key}' has shape {array.shape}, "
                                     f"'{first_key}' has dimension {shape}")
            if each is not None:
                each(key, array)
    except (ArkFormatError, OSError) as exc:
        finite.check()
        raise AlignmentError(f"{scp_path}: {exc}") from exc
    finite.check()
    if len(set(keys)) != len(keys):
        dup = sorted(k for k, n in collections.Counter(keys).items() if n > 1)
        raise AlignmentError(f"{scp_path}: duplicate ids: {_some(dup)}")
    if keys != list(reference):
        first = next((i for i, (a, b) in enumerate(zip(keys, reference)) if a != b),
                     min(len(keys), len(reference)))
        raise AlignmentError(f"{scp_path}: ids differ from the reference at line {first + 1} "
                             f"({len(keys)} ids, {len(reference)} expected)")
    return shape or ()
