"""Which utterances each job of an extraction stage runs, and in what order.

The utterance list (``wav.scp`` or ``segments`` lines, sorted by id) is cut into contiguous
parts of about equal audio (``utt2dur``; else equal counts), as Kaldi's ``split_scp.pl`` cuts
it. Utterances that point into a shard (``speechdump.containers``) are first put together, in
the order they lie in their shard, and a shard is never cut between two jobs: each job reads
each of its shards once, front to back (a compressed tar as one stream). Only where there are
fewer shards than jobs are shards cut, each part still read in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from speechdump import containers
from speechdump.errors import DataDirError


@dataclass
class Plan:
    parts: List[List[str]]  # the lines of each job, in reading order
    shards: int  # shards the utterances point into
    shards_cut: bool  # fewer shards than jobs: some are read by several jobs


def _sources(lines: Sequence[str],
             recordings: Optional[Dict[str, str]]) -> List[Tuple[str, float]]:
    """The wav.scp entry each line reads, and where in it the utterance starts (s)."""
    sources = []
    for line in lines:
        fields = line.split()
        if recordings is None:
            sources.append((line.split(maxsplit=1)[1].strip() if len(fields) > 1 else "", 0.0))
            continue
        if len(fields) != 4:
            raise DataDirError(f"segments line '{line.strip()}' is not "
                               "'<utt> <recording> <start> <end>'")
        if fields[1] not in recordings:
            raise DataDirError(f"segments: recording '{fields[1]}' of '{fields[0]}' is not in "
                               "wav.scp")
        sources.append((recordings[fields[1]], float(fields[2])))
    return sources


def _units(sources: Sequence[Tuple[str, float]]) -> Tuple[List[List[int]], int]:
    """Indices of the lines grouped as they must be read: those of one shard together, in
    their place there (segments: then by start), the groups in the order of their first line;
    every other line a group of its own. And how many shards there are."""
    shards: Dict[str, List[Tuple[tuple, int]]] = {}
    order: List[object] = []
    for i, (value, start) in enumerate(sources):
        entry = containers.parse(value)
        if entry is None:
            order.append(i)
            continue
        if entry.path not in shards:
            shards[entry.path] = []
            order.append(entry.path)
        shards[entry.path].append((containers.place(entry) + (start,), i))
    units = [[i for _, i in sorted(shards[key])] if isinstance(key, str) else [key]
             for key in order]
    return units, len(shards)


def _bounds(weights: Sequence[float], parts: int, equal_counts: bool) -> List[int]:
    """Where each of ``parts`` contiguous parts of units starts (and, last, the end): equal
    counts, or the unit boundary closest to each equal share of the total weight, leaving at
    least one unit to every later part (as ``split_scp.pl``)."""
    n = len(weights)
    bounds = [0]
    if equal_counts:
        size, extra = divmod(n, parts)
        for p in range(parts):
            bounds.append(bounds[-1] + size + (1 if p < extra else 0))
        return bounds
    cum = [0.0]
    for w in weights:
        cum.append(cum[-1] + w)
    for p in range(parts - 1):
        target = cum[-1] * (p + 1) / parts
        b, hi = bounds[-1] + 1, n - (parts - 1 - p)
        while b < hi and abs(cum[b + 1] - target) < abs(cum[b] - target):
            b += 1
        bounds.append(b)
    return bounds + [n]


def plan(lines: Sequence[str], parts: int, utt2dur: Optional[Dict[str, str]] = None,
         recordings: Optional[Dict[str, str]] = None) -> Plan:
    """Splits ``lines`` (of wav.scp, or of segments over ``recordings``: wav.scp as a dict)
    into ``parts`` jobs; ``utt2dur`` balances them by audio."""
    if len(lines) < parts:
        raise DataDirError(f"{len(lines)} utterances cannot make {parts} non-empty jobs")
    units, shards = _units(_sources(lines, recordings))
    shards_cut = len(units) < parts
    if shards_cut:  # each line alone, still in reading order
        units = [[i] for unit in units for i in unit]

    def weight(i: int) -> float:
        utt = lines[i].split(maxsplit=1)[0]
        if utt not in utt2dur:
            raise DataDirError(f"'{utt}' has no duration in utt2dur")
        return float(utt2dur[utt])

    weights = [sum(weight(i) for i in unit) if utt2dur else float(len(unit)) for unit in units]
    bounds = _bounds(weights, parts, equal_counts=utt2dur is None and shards == 0)
    return Plan([[lines[i] for unit in units[bounds[p]:bounds[p + 1]] for i in unit]
                 for p in range(parts)], shards, shards_cut)

