"""Speaker-level views of utterance embeddings: per-speaker means and same/different cosines."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Tuple

import numpy as np


def speaker_means(vectors: Iterable[Tuple[str, np.ndarray]], utt2spk: Mapping[str, str],
                  normalize: bool = True, normalize_utts: bool = False) -> Dict[str, np.ndarray]:
    """Mean utterance vector of every speaker, speakers in sorted (``LC_ALL=C``) order.

    With ``normalize`` the mean is L2-normalised (Resemblyzer's ``embed_speaker``, Kaldi's
    ``ivector-mean`` + ``ivector-normalize-length``); with ``normalize_utts`` every utterance
    vector is L2-normalised first, so each utterance weighs the same in the direction.
    Accumulates in float64 one vector at a time, so memory is one vector per speaker.
    """
    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    for utt, vector in vectors:
        if utt not in utt2spk:
            raise KeyError(f"utterance '{utt}' has no speaker in utt2spk")
        spk = utt2spk[utt]
        vector = np.asarray(vector, dtype=np.float64)
        if normalize_utts:
            vector = vector / np.linalg.norm(vector)
        if spk in sums:
            sums[spk] += vector
            counts[spk] += 1
        else:
            sums[spk], counts[spk] = vector.copy(), 1
    means = {}
    for spk in sorted(sums, key=lambda s: s.encode("utf-8")):
        mean = sums[spk] / counts[spk]
        if normalize:
            mean = mean / np.linalg.norm(mean)
        means[spk] = mean.astype(np.float32)
    return means


@dataclass
class CosineSummary:
    same_mean: float
    same_min: float
    same_pairs: int
    diff_mean: float
    diff_max: float
    diff_pairs: int

    def __str__(self) -> str:
        return (f"same speaker: mean cosine {self.same_mean:.3f} (min {self.same_min:.3f}, "
                f"{self.same_pairs} pairs); different speakers: mean cosine {self.diff_mean:.3f} "
                f"(max {self.diff_max:.3f}, {self.diff_pairs} pairs)")


def cosine_summary(vectors: Mapping[str, np.ndarray], utt2spk: Mapping[str, str]) -> CosineSummary:
    """Cosine similarity of every utterance pair, split by same and different speaker."""
    ids = list(vectors)
    unit = {u: vectors[u] / np.linalg.norm(vectors[u]) for u in ids}
    same, diff = [], []
    for a, b in itertools.combinations(ids, 2):
        (same if utt2spk[a] == utt2spk[b] else diff).append(float(unit[a] @ unit[b]))
    nan = float("nan")
    return CosineSummary(
        same_mean=float(np.mean(same)) if same else nan, same_min=min(same, default=nan),
        same_pairs=len(same),
        diff_mean=float(np.mean(diff)) if diff else nan, diff_max=max(diff, default=nan),
        diff_pairs=len(diff))
