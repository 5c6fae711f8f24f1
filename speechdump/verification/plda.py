"""A two-covariance PLDA back end (Kaldi's ``ivector-compute-plda`` model).

Embeddings are first centred (the training mean), projected by LDA to ``lda_dim`` dimensions
(the directions that best separate the training speakers, within-speaker scatter whitened),
centred again and length-normalised to a norm of sqrt(dim). In that space an embedding is
x = y + e: the speaker's y ~ N(mu, B) plus e ~ N(0, W). B and W are trained by EM
(Sizov et al., 2014, "Unifying PLDA variants"), from the between- and within-speaker
scatter. A trial's score is the log-likelihood ratio of one speaker against two; with B and W
diagonalised together (W = I, B = diag(psi)) it is a sum over dimensions: for an enrollment of
n embeddings averaging to u and a test embedding v,

    LLR = log N(v; n psi / (n psi + 1) u, 1 + psi / (n psi + 1)) - log N(v; 0, 1 + psi).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Mapping, Optional

import numpy as np
import scipy.linalg

from speechdump.data import atomic_path
from speechdump.errors import TrialError
from speechdump.verification.scoring import Embeddings, Side, group_means

ARRAYS = ("mean", "lda", "centre", "mu", "between", "within")


@dataclass
class PldaModel:
    mean: np.ndarray     # (dim,) training mean of the raw embeddings
    lda: np.ndarray      # (dim, lda_dim)
    centre: np.ndarray   # (lda_dim,) training mean after LDA
    mu: np.ndarray       # (lda_dim,) speaker mean, after length normalisation
    between: np.ndarray  # (lda_dim, lda_dim) between-speaker covariance B
    within: np.ndarray   # (lda_dim, lda_dim) within-speaker covariance W
    info: dict

    def preprocess(self, matrix: np.ndarray) -> np.ndarray:
        """Raw embeddings -> the length-normalised LDA space the model lives in."""
        if matrix.shape[1] != self.mean.shape[0]:
            raise TrialError(f"embeddings of dimension {matrix.shape[1]} given to a PLDA model "
                             f"trained on dimension {self.mean.shape[0]} "
                             f"({self.info.get('train_scp', '?')})")
        projected = (matrix - self.mean) @ self.lda - self.centre
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        return projected * (np.sqrt(projected.shape[1]) / np.maximum(norms, 1e-30))

    def save(self, path: str) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, info=np.array(json.dumps(self.info)),
                         **{name: getattr(self, name) for name in ARRAYS})

    @classmethod
    def load(cls, path: str) -> "PldaModel":
        if not os.path.isfile(path):
            raise TrialError(f"PLDA model {path} does not exist (scripts/train_plda.sh writes "
                             "it)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in ARRAYS}
                info = json.loads(str(npz["info"]))
        except (KeyError, ValueError, OSError) as exc:
            raise TrialError(f"{path} is not a PLDA model written by scripts/train_plda.sh: "
                             f"{exc}") from None
        return cls(info=info, **arrays)


def _scatter(matrix: np.ndarray, labels: np.ndarray, speakers: int):
    """(per-speaker sums, counts, within-speaker scatter over N)."""
    counts = np.bincount(labels, minlength=speakers)
    sums = np.zeros((speakers, matrix.shape[1]))
    np.add.at(sums, labels, matrix)
    means = sums / counts[:, None]
    residual = matrix - means[labels]
    return sums, counts, residual.T @ residual / len(matrix)


def _lda(matrix: np.ndarray, labels: np.ndarray, speakers: int, dim: int) -> np.ndarray:
    sums, counts, within = _scatter(matrix, labels, speakers)
    means = sums / counts[:, None]
    centred = means - matrix.mean(axis=0)
    between = (centred * counts[:, None]).T @ centred / len(matrix)
    within += np.eye(len(within)) * 1e-6 * np.trace(within) / len(within)
    # Generalised eigenvectors: V^T W V = I, the largest between-speaker ratios first.
    values, vectors = scipy.linalg.eigh(between, within)
    return vectors[:, np.argsort(values)[::-1][:dim]]


def fit_two_covariance(x: np.ndarray, labels: np.ndarray, speakers: int, iterations: int):
    """(mu, B, W) of the two-covariance model, by EM from the scatter estimates."""
    n_total, dim = x.shape
    sums, counts, within = _scatter(x, labels, speakers)
    means = sums / counts[:, None]
    mu = means.mean(axis=0)
    between = np.cov(means.T, bias=True) + np.eye(dim) * 1e-6
    within = within + np.eye(dim) * 1e-6
    second = x.T @ x
    for _ in range(iterations):
        b_prec, w_prec = np.linalg.inv(between), np.linalg.inv(within)
        y = np.empty_like(means)
        posterior_cov = np.zeros((dim, dim))          # sum over speakers of L_i^-1
        weighted_cov = np.zeros((dim, dim))           # sum of n_i L_i^-1
        for n in np.unique(counts):
            members = np.flatnonzero(counts == n)
            cov = np.linalg.inv(b_prec + n * w_prec)  # the posterior covariance of y
            y[members] = (b_prec @ mu + sums[members] @ w_prec) @ cov
            posterior_cov += len(members) * cov
            weighted_cov += len(members) * n * cov
        mu = y.mean(axis=0)
        between = (posterior_cov + y.T @ y) / speakers - np.outer(mu, mu)
        cross = sums.T @ y
        within = (second - cross - cross.T + weighted_cov + (y * counts[:, None]).T @ y) / n_total
        between, within = (between + between.T) / 2, (within + within.T) / 2
    return mu, between, within


def train(embeddings: Embeddings, utt2spk: Mapping[str, str], lda_dim: int = 200,
          iterations: int = 10) -> PldaModel:
    """LDA, centring, length normalisation and the two-covariance model, trained on
    ``embeddings`` labelled by ``utt2spk``."""
    missing = [u for u in embeddings.ids if u not in utt2spk]
    if missing:
        raise TrialError(f"{len(missing)} embeddings of {embeddings.source} have no speaker "
                         f"in utt2spk; the first: {' '.join(missing[:10])}")
    names, labels = np.unique([utt2spk[u] for u in embeddings.ids], return_inverse=True)
    speakers = len(names)
    counts = np.bincount(labels)
    if speakers < 2 or counts.max() < 2:
        raise TrialError(f"PLDA training needs two speakers or more and a speaker with two "
                         f"embeddings or more; {embeddings.source} has {speakers} speakers, "
                         f"{counts.max()} embeddings at most")
    dim = min(lda_dim, embeddings.dim, speakers - 1)
    mean = embeddings.matrix.mean(axis=0)
    lda = _lda(embeddings.matrix - mean, labels, speakers, dim)
    projected = (embeddings.matrix - mean) @ lda
    centre = projected.mean(axis=0)
    model = PldaModel(mean, lda, centre, np.zeros(dim), np.eye(dim), np.eye(dim), {})
    x = model.preprocess(embeddings.matrix)
    model.mu, model.between, model.within = fit_two_covariance(x, labels, speakers, iterations)
    model.info = {"train_scp": embeddings.source, "embeddings": len(embeddings.ids),
                  "speakers": speakers, "dim": embeddings.dim, "lda_dim": dim,
                  "lda_dim_asked": lda_dim, "iterations": iterations}
    return model


class PldaBackend:
    name = "plda"

    def __init__(self, model: PldaModel):
        self.model = model
        # T with T W T^T = I and T B T^T = diag(psi).
        psi, vectors = scipy.linalg.eigh(model.between, model.within)
        self.transform = vectors.T
        self.psi = np.maximum(psi, 0.0)

    def side(self, embeddings: Embeddings, groups: Optional[Mapping[str, List[str]]] = None
             ) -> Side:
        """Rows in the diagonal space; with ``groups``, each group's mean and its count (the
        LLR of an n-embedding enrollment depends on them alone)."""
        u = (self.model.preprocess(embeddings.matrix) - self.model.mu) @ self.transform.T
        if groups is None:
            return Side(embeddings.ids, u, np.ones(len(u), dtype=np.int64))
        return Side(*group_means(u, embeddings, groups))

    def _terms(self, counts: np.ndarray):
        """Per enrollment row: gain n psi / (n psi + 1), same-speaker variance, and the
        constant of its log-likelihood ratio."""
        n_psi = counts[:, None] * self.psi
        gain = n_psi / (n_psi + 1)
        var_same = 1 + self.psi / (n_psi + 1)
        constant = -0.5 * np.log(var_same / (1 + self.psi)).sum(axis=1)
        return gain, var_same, constant

    def score_pairs(self, a: Side, rows_a: np.ndarray, b: Side, rows_b: np.ndarray
                    ) -> np.ndarray:
        self._single(b)
        gain, var_same, constant = self._terms(a.counts[rows_a])
        u, v = a.matrix[rows_a], b.matrix[rows_b]
        return constant - 0.5 * (((v - gain * u) ** 2 / var_same).sum(axis=1)
                                 - (v ** 2 / (1 + self.psi)).sum(axis=1))

    def score_matrix(self, a: Side, b: Side) -> np.ndarray:
        self._single(b)
        gain, var_same, constant = self._terms(a.counts)
        mean, v = gain * a.matrix, b.matrix
        # The squares of the LLR, expanded so that every (a, b) pair comes from products.
        same = ((1 / var_same) @ (v ** 2).T - 2 * (mean / var_same) @ v.T
                + (mean ** 2 / var_same).sum(axis=1)[:, None])
        different = (v ** 2 / (1 + self.psi)).sum(axis=1)[None, :]
        return constant[:, None] - 0.5 * (same - different)

    @staticmethod
    def _single(side: Side) -> None:
        if (side.counts != 1).any():
            raise TrialError("PLDA scores an averaged enrollment against single test "
                             "embeddings only")
