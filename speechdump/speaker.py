"""Speaker-level vectors: the mean of each speaker's utterance embeddings."""

from __future__ import annotations

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
