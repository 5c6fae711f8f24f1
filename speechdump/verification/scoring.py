"""Trial scores: embeddings read into one matrix per side, a back end's scores of pairs and of
whole matrices, and cohort score normalisation.

* Cosine (``CosineBackend``): of the embeddings less ``mean`` (WeSpeaker subtracts the training
  set's mean), length-normalised.
* S-norm and AS-norm (``normalise``): each side scored against the cohort; with the mean μ and
  standard deviation σ (population: over N, as WeSpeaker's ``score_norm.py``) of its ``top_n``
  highest cohort scores, s' = ½[(s − μₑ)/σₑ + (s − μₜ)/σₜ]. S-norm is AS-norm with the whole
  cohort.

Everything is a matrix product over the distinct enrollment, test and cohort embeddings, never
a loop over trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from speechdump.errors import TrialError
from speechdump.kaldi_io import read_scp_arrays

ROWS_PER_BLOCK = 1024  # cohort scores are computed this many rows at a time: memory stays bounded


@dataclass
class Embeddings:
    """Vectors of one scp as rows, in its order."""

    ids: List[str]
    matrix: np.ndarray  # (n, dim) float64
    source: str
    index: Dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {key: row for row, key in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))


def read_embeddings(scp: str, keys: Optional[Sequence[str]] = None) -> Embeddings:
    """The vectors of ``scp`` (only ``keys``, in their order, when given), read in one pass
    over the arks. A vector of another dimension, or one that is not a vector, is an error
    naming it."""
    wanted = None if keys is None else set(keys)
    found: Dict[str, np.ndarray] = {}
    dim = None
    for key, array in read_scp_arrays(scp):
        if wanted is not None and key not in wanted:
            continue
        vector = array.reshape(-1) if array.ndim == 2 and array.shape[0] == 1 else array
        if vector.ndim != 1:
            raise TrialError(f"{scp}: '{key}' holds an array of shape {array.shape}, not an "
                             "embedding vector")
        if dim is None:
            dim, first = len(vector), key
        elif len(vector) != dim:
            raise TrialError(f"{scp}: '{key}' has dimension {len(vector)}, '{first}' {dim}")
        found[key] = vector
    ids = list(found) if keys is None else list(dict.fromkeys(keys))
    missing = [k for k in ids if k not in found]
    if missing:
        raise TrialError(f"{len(missing)} ids have no embedding in {scp}; the first: "
                         f"{' '.join(missing[:10])}")
    if not ids:
        raise TrialError(f"{scp} holds no embeddings")
    return Embeddings(ids, np.array([found[k] for k in ids], dtype=np.float64), scp)


def require_ids(keys: Set[str], ids: Sequence[str], side: str, trials: str, scp: str) -> None:
    """Every trial id of ``side`` must be among ``keys`` (those of ``scp``): else an error
    listing the first missing ones and their count."""
    missing = [k for k in dict.fromkeys(ids) if k not in keys]
    if missing:
        raise TrialError(f"{trials}: {len(missing)} {side} ids have no embedding in {scp}; "
                         f"the first: {' '.join(missing[:10])}")


def require_dim(embeddings: Embeddings, dim: int, what: str) -> None:
    if embeddings.dim != dim:
        raise TrialError(f"{embeddings.source} ({what}) has embeddings of dimension "
                         f"{embeddings.dim}; the trials' embeddings have {dim}")


@dataclass
class Side:
    """Embeddings ready for a back end's scores: ``counts[i]`` utterances stand behind row i
    (more than one where an enrollment averages a speaker's utterances)."""

    ids: List[str]
    matrix: np.ndarray
    counts: np.ndarray

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        index = {key: row for row, key in enumerate(self.ids)}
        return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


def unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise TrialError(f"{int((norms == 0).sum())} embeddings are all zeros: they have no "
                         "direction to score")
    return matrix / norms


class CosineBackend:
    name = "cosine"

    def __init__(self, mean: Optional[np.ndarray] = None):
        self.mean = mean

    def side(self, embeddings: Embeddings, groups: Optional[Mapping[str, List[str]]] = None
             ) -> Side:
        """Rows ready to score; with ``groups`` ({enroll id: its utterances}), one row per
        group: the mean of its utterances' unit vectors, normalised again."""
        matrix = unit(embeddings.matrix - self.mean if self.mean is not None
                      else embeddings.matrix)
        if groups is None:
            return Side(embeddings.ids, matrix, np.ones(len(matrix), dtype=np.int64))
        ids, means, counts = group_means(matrix, embeddings, groups)
        return Side(ids, unit(means), counts)

    def score_pairs(self, a: Side, rows_a: np.ndarray, b: Side, rows_b: np.ndarray
                    ) -> np.ndarray:
        return np.einsum("ij,ij->i", a.matrix[rows_a], b.matrix[rows_b])

    def score_matrix(self, a: Side, b: Side) -> np.ndarray:
        return a.matrix @ b.matrix.T


def group_means(matrix: np.ndarray, embeddings: Embeddings, groups: Mapping[str, List[str]]
                ) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(group ids, the mean row of each group's members, member counts)."""
    ids = list(groups)
    counts = np.array([len(groups[g]) for g in ids], dtype=np.int64)
    members = np.concatenate([embeddings.rows(groups[g]) for g in ids])
    owner = np.repeat(np.arange(len(ids)), counts)
    sums = np.zeros((len(ids), matrix.shape[1]))
    np.add.at(sums, owner, matrix[members])
    return ids, sums / counts[:, None], counts


def cohort_statistics(backend, side: Side, cohort: Side, top_n: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each row's ``top_n`` highest scores against the cohort."""
    size = len(cohort.ids)
    means, stds = np.empty(len(side.ids)), np.empty(len(side.ids))
    for start in range(0, len(side.ids), ROWS_PER_BLOCK):
        block = Side(side.ids[start:start + ROWS_PER_BLOCK],
                     side.matrix[start:start + ROWS_PER_BLOCK],
                     side.counts[start:start + ROWS_PER_BLOCK])
        scores = backend.score_matrix(block, cohort)
        if top_n < size:
            scores = np.partition(scores, size - top_n, axis=1)[:, size - top_n:]
        means[start:start + len(block.ids)] = scores.mean(axis=1)
        stds[start:start + len(block.ids)] = scores.std(axis=1)
    # Copies of one vector score alike up to rounding: a deviation at that level is none.
    flat = np.flatnonzero(stds <= 1e-9 * (1 + np.abs(means)))
    if len(flat):
        raise TrialError(f"{len(flat)} embeddings score the same against all of their top "
                         f"{top_n} cohort entries (standard deviation 0), e.g. "
                         f"'{side.ids[flat[0]]}': the cohort holds copies of one vector")
    return means, stds


def normalise(backend, scores: np.ndarray, enroll: Side, rows_e: np.ndarray, test: Side,
              rows_t: np.ndarray, cohort: Side, top_n: int) -> np.ndarray:
    """AS-norm (S-norm where ``top_n`` is the cohort's size) of trial ``scores``."""
    if len(cohort.ids) < 2:
        raise TrialError(f"a cohort of {len(cohort.ids)} embedding cannot normalise scores: it "
                         "needs two speakers or more (a standard deviation of their scores)")
    if not 2 <= top_n <= len(cohort.ids):
        raise TrialError(f"--top_n must be between 2 and the cohort's size {len(cohort.ids)}, "
                         f"got {top_n}")
    mean_e, std_e = cohort_statistics(backend, enroll, cohort, top_n)
    mean_t, std_t = (mean_e, std_e) if test is enroll else \
        cohort_statistics(backend, test, cohort, top_n)
    return 0.5 * ((scores - mean_e[rows_e]) / std_e[rows_e]
                  + (scores - mean_t[rows_t]) / std_t[rows_t])


def speaker_groups(utt2spk: Mapping[str, str], speakers: Sequence[str], source: str
                   ) -> Dict[str, List[str]]:
    """{speaker: its utterances} for ``speakers`` (enrollment by speaker); a speaker with none
    is an error naming the first such speakers."""
    groups: Dict[str, List[str]] = {s: [] for s in speakers}
    for utt, spk in utt2spk.items():
        if spk in groups:
            groups[spk].append(utt)
    empty = [s for s, utts in groups.items() if not utts]
    if empty:
        raise TrialError(f"{len(empty)} enrollment speakers have no utterance in {source}; "
                         f"the first: {' '.join(empty[:10])}")
    return groups
