"""Speaker-level vectors: the mean of each speaker's utterance embeddings."""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np


class SpeakerMeans:
    """Accumulates utterance vectors per speaker, fed one at a time (``add``), e.g. while the
    merge checks them, so the arrays are read once.

    Sums are float64; vectors are summed a chunk at a time, which keeps the per-vector Python
    cost small on millions of utterances, and the same vectors in the same order always give
    the same sums. Memory: one sum per speaker plus one chunk.
    """

    CHUNK = 4096

    def __init__(self, utt2spk: Mapping[str, str], normalize_utts: bool = False):
        self.utt2spk = utt2spk
        self.normalize_utts = normalize_utts
        self._row: Dict[str, int] = {}  # speaker -> row of _sums
        self._sums = None
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending_rows: List[int] = []
        self._pending: List[np.ndarray] = []

    def add(self, utt: str, vector: np.ndarray) -> None:
        spk = self.utt2spk.get(utt)
        if spk is None:
            raise KeyError(f"utterance '{utt}' has no speaker in utt2spk")
        self._pending_rows.append(self._row.setdefault(spk, len(self._row)))
        self._pending.append(vector)
        if len(self._pending) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk = np.array(self._pending, dtype=np.float64)
        if self.normalize_utts:
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        rows = np.array(self._pending_rows)
        if self._sums is None:
            self._sums = np.zeros((0, chunk.shape[1]))
        if len(self._row) > len(self._sums):  # speakers seen for the first time
            self._sums = np.concatenate(
                [self._sums, np.zeros((len(self._row) - len(self._sums), chunk.shape[1]))])
            self._counts = np.pad(self._counts, (0, len(self._row) - len(self._counts)))
        # Each speaker's vectors of the chunk, in their order, summed together, then added.
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        speakers = rows[starts]
        self._sums[speakers] += np.add.reduceat(chunk[order], starts, axis=0)
        self._counts[speakers] += np.diff(np.r_[starts, len(rows)])
        self._pending_rows, self._pending = [], []

    def means(self, normalize: bool = True) -> Dict[str, np.ndarray]:
        """Mean vector of every speaker, speakers in sorted (``LC_ALL=C``) order.

        With ``normalize`` the mean is L2-normalised (Resemblyzer's ``embed_speaker``, Kaldi's
        ``ivector-mean`` + ``ivector-normalize-length``).
        """
        self._flush()
        result = {}
        for spk in sorted(self._row, key=lambda s: s.encode("utf-8")):
            row = self._row[spk]
            mean = self._sums[row] / self._counts[row]
            if normalize:
                mean = mean / np.linalg.norm(mean)
            result[spk] = mean.astype(np.float32)
        return result


def speaker_means(vectors: Iterable[Tuple[str, np.ndarray]], utt2spk: Mapping[str, str],
                  normalize: bool = True, normalize_utts: bool = False) -> Dict[str, np.ndarray]:
    """Mean utterance vector of every speaker (see ``SpeakerMeans``); with ``normalize_utts``
    every utterance vector is L2-normalised first, so each utterance weighs the same in the
    direction."""
    accumulator = SpeakerMeans(utt2spk, normalize_utts)
    for utt, vector in vectors:
        accumulator.add(utt, vector)
    return accumulator.means(normalize)
