"""Discrete speech tokens: k-means over frame features, and nearest-center assignment.

A model directory (``km_dir``) holds ``centers.npy`` (float32, K x D; loaded with
``allow_pickle=False``), ``centers.mat`` (the same matrix as a binary Kaldi matrix, for Kaldi
tools) and ``kmeans.json`` (the settings and training figures). ``kmeans.json`` is written last,
so its presence means the model is complete.

Training is out of core: the training frames (a seeded sample of the utterances, capped at
``max_frames``) are read one utterance at a time on every pass and never held together, so
memory is bounded by one mini-batch, one utterance and the seeding sample, whatever the corpus
size (``bench/kmeans_memory.py``).

Tokens are written per utterance as int32 vectors (Kaldi ``Vector<int32>``) and as a Kaldi text
table ``<utt> <t1> <t2> ...``; the token of a frame depends on that frame and the centers only,
never on how utterances were split into jobs or batched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np

from speechdump.data import atomic_path
from speechdump.errors import TokenError
from speechdump.kaldi_io import load_entry, read_scp_table

CENTERS_NPY = "centers.npy"
CENTERS_MAT = "centers.mat"
SETTINGS_JSON = "kmeans.json"

# k-means++ seeds on a uniform sample of this many mini-batches of the training frames, as
# sklearn's MiniBatchKMeans (init_size = 3 * batch_size, at least 3 * n_clusters).
INIT_BATCHES = 3
# Training stops after a pass that lowered the mean squared distance of the frames to their
# nearest center (measured on each mini-batch before it updates the centers) by less than this
# fraction of the pass before, or after --max_iter passes. (sklearn's own rule, no gain in the
# smoothed inertia of 10 consecutive mini-batches, stops after a few dozen mini-batches of
# consecutive utterances: their inertia varies with the speaker far more than that of
# independently drawn frames.)
TOL = 1e-3


# ----------------------------------------------------------------------------- reading features

def feature_table(scp_path: str) -> Dict[str, str]:
    """A feats.scp as id -> location in file order; an empty one is a TokenError."""
    table = read_scp_table(scp_path)
    if not table:
        raise TokenError(f"{scp_path}: no entries")
    return table


def load_matrix(scp_path: str, key: str, location: str) -> np.ndarray:
    """One feature matrix (frames x dim) as float32; errors name the scp and the id."""
    array = np.asarray(load_entry(location, key, scp_path))
    if array.ndim != 2:
        raise TokenError(f"{scp_path}: '{key}' is not a matrix (shape {array.shape})")
    return array.astype(np.float32, copy=False)


def iter_features(scp_path: str, keys: Optional[Sequence[str]] = None,
                  table: Optional[Dict[str, str]] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Feature matrices of an scp (all of them, or ``keys`` in that order), read one at a time
    (no ark stays mapped: memory holds one matrix). ``table``: the scp, when already read."""
    table = feature_table(scp_path) if table is None else table
    for key in (table if keys is None else keys):
        yield key, load_matrix(scp_path, key, table[key])


# ----------------------------------------------------------------------------- learning

def sample_keys(keys: Sequence[str], portion: float, seed: int) -> List[str]:
    """``ceil(portion * N)`` ids (at least one), drawn without replacement in a seeded random
    order."""
    if not 0.0 < portion <= 1.0:
        raise TokenError(f"portion must be in (0, 1], got {portion}")
    count = max(1, min(len(keys), int(math.ceil(portion * len(keys) - 1e-9))))
    order = np.random.default_rng(seed).permutation(len(keys))[:count]
    return [keys[i] for i in order]


class _Reservoir:
    """A uniform sample of at most ``size`` rows of a stream of matrices (Algorithm R, one
    seeded draw per row past the first ``size``): bounded memory, whatever the stream."""

    def __init__(self, size: int, dim: int, rng: np.random.Generator):
        self.rows = np.empty((size, dim), dtype=np.float32)
        self.seen = 0
        self._rng = rng

    def add(self, matrix: np.ndarray) -> None:
        size = len(self.rows)
        fill = max(0, min(len(matrix), size - self.seen))
        self.rows[self.seen:self.seen + fill] = matrix[:fill]
        rest = matrix[fill:]
        if len(rest):
            positions = self.seen + fill + np.arange(len(rest))
            slots = self._rng.integers(0, positions + 1)
            chosen = np.flatnonzero(slots < size)
            # A later row drawn into the same slot replaces an earlier one: keep the last.
            _, last = np.unique(slots[chosen][::-1], return_index=True)
            chosen = chosen[len(chosen) - 1 - last]
            self.rows[slots[chosen]] = rest[chosen]
        self.seen += len(matrix)

    def sample(self) -> np.ndarray:
        return self.rows[:min(self.seen, len(self.rows))]


@dataclass
class TrainingFrames:
    """The frames k-means trains on, read again on every pass and never held together: the
    sampled utterances (``plan``: id, location and frames taken, the last one cut at
    ``max_frames``)."""

    scp_path: str
    plan: List[Tuple[str, str, int]]
    dim: int
    total: int

    @property
    def num_utts(self) -> int:
        return len(self.plan)

    def matrices(self, order: Optional[Iterable[int]] = None) -> Iterator[np.ndarray]:
        """The training frames of each utterance, one utterance at a time (``order``: plan
        indices; default the sampled order)."""
        for i in (range(len(self.plan)) if order is None else order):
            key, location, take = self.plan[i]
            yield load_matrix(self.scp_path, key, location)[:take]

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """One pass as mini-batches of ``batch_size`` frames (the last may be smaller): the
        utterances in an order drawn from ``rng``, each batch the frames of consecutive ones."""
        pending: List[np.ndarray] = []
        count = 0
        for matrix in self.matrices(rng.permutation(len(self.plan))):
            while len(matrix):
                take = min(batch_size - count, len(matrix))
                pending.append(matrix[:take])
                count += take
                matrix = matrix[take:]
                if count == batch_size:
                    yield np.concatenate(pending)
                    pending, count = [], 0
        if pending:
            yield np.concatenate(pending)


def training_frames(scp_path: str, portion: float, seed: int, max_frames: int = 0,
                    init_size: int = 30000) -> Tuple[TrainingFrames, np.ndarray]:
    """Reads the training frames once: the utterances of a seeded sample (in its random order),
    stopped at ``max_frames`` (0: no cap; the last utterance read is cut), checked for one
    dimension and finite values. Returns them (as a plan to read again) and a seeded uniform
    sample of at most ``init_size`` of them, for seeding the centers."""
    table = feature_table(scp_path)
    keys = sample_keys(list(table), portion, seed)
    plan: List[Tuple[str, str, int]] = []
    reservoir: Optional[_Reservoir] = None
    total, dim = 0, None
    for key, matrix in iter_features(scp_path, keys, table):
        if dim is None:
            dim = matrix.shape[1]
            reservoir = _Reservoir(init_size, dim, np.random.default_rng([seed, 1]))
        elif matrix.shape[1] != dim:
            raise TokenError(f"{scp_path}: '{key}' has dimension {matrix.shape[1]}, "
                             f"'{keys[0]}' has {dim}")
        if max_frames and total + len(matrix) > max_frames:
            matrix = matrix[:max_frames - total]
        if not np.isfinite(matrix).all():
            raise TokenError(f"{scp_path}: '{key}' holds NaN or Inf")
        if len(matrix):
            plan.append((key, table[key], len(matrix)))
            reservoir.add(matrix)
            total += len(matrix)
        if max_frames and total >= max_frames:
            break
    if not total:
        raise TokenError(f"{scp_path}: the sampled utterances hold no frames")
    return TrainingFrames(scp_path, plan, int(dim), total), reservoir.sample()


@dataclass
class KMeansModel:
    centers: np.ndarray  # float32, K x D
    settings: dict

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])


def squared_distances(frames: np.ndarray, centers: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Squared Euclidean distance of every frame to its nearest center (for the inertia
    figures; float32 products, as sklearn's own inertia on float32 data, returned as float64
    for summing), ``rows`` frames at a time (bounded memory)."""
    c = np.asarray(centers, dtype=np.float32)
    c_sq = (c * c).sum(axis=1)
    out = np.empty(len(frames), dtype=np.float64)
    for start in range(0, len(frames), rows):
        x = np.asarray(frames[start:start + rows], dtype=np.float32)
        d = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ c.T) + c_sq[None, :]
        out[start:start + len(x)] = np.maximum(d.min(axis=1), 0.0)
    return out


def seed_centers(sample: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
    """The best (lowest inertia on ``sample``) of ``n_init`` seeded k-means++ seedings."""
    from sklearn.cluster import kmeans_plusplus

    state = np.random.RandomState(seed)
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centers, _ = kmeans_plusplus(sample, n_clusters, random_state=state)
        inertia = float(squared_distances(sample, centers).sum())
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
    return best.astype(np.float32)


def fit_kmeans(frames: TrainingFrames, init_sample: np.ndarray, n_clusters: int, seed: int,
               batch_size: int = 10000, max_iter: int = 100, n_init: int = 3,
               num_threads: int = 1) -> Tuple[np.ndarray, float, dict]:
    """Mini-batch k-means over ``frames``, streamed: k-means++ seeding (``n_init`` tries) on
    ``init_sample`` (a sample of the frames), then passes of ``MiniBatchKMeans.partial_fit``
    over mini-batches of ``batch_size`` frames, each pass in its own seeded order of the
    utterances, until a pass gains less than ``TOL`` (relative) or ``max_iter`` passes.
    Returns the centers (float32), the inertia over every training frame (sum of squared
    distances to the nearest center, one more streamed pass) and the training figures.

    A seed gives the same centers again on the same machine and BLAS; another CPU (or
    ``OPENBLAS_CORETYPE``) picks other BLAS kernels, which moves them in the fifth digit.
    sklearn's OpenMP and BLAS threads are held to ``num_threads``, the CPUs the job was given,
    instead of every core of the node.
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if n_clusters < 1:
        raise TokenError(f"n_clusters must be positive, got {n_clusters}")
    if frames.total < n_clusters:
        raise TokenError(f"only {frames.total} training frames for {n_clusters} clusters: "
                         "raise --portion or --max_frames, or lower --n_clusters")
    if batch_size < n_clusters and frames.total > batch_size:
        raise TokenError(f"batch_size {batch_size} is below n_clusters {n_clusters}: the first "
                         "mini-batch must hold a frame per center")
    with threadpool_limits(num_threads):
        centers = seed_centers(init_sample, n_clusters, seed, n_init)
        km = MiniBatchKMeans(n_clusters=n_clusters, init=centers, n_init=1,
                             batch_size=batch_size, random_state=seed, compute_labels=False)
        steps, passes, stopped, previous = 0, 0, False, math.inf
        while passes < max_iter and not stopped:
            distance = 0.0  # of each batch to the centers it is about to update
            for batch in frames.batches(batch_size, np.random.default_rng([seed, 2, passes])):
                distance += float(squared_distances(batch, centers).sum())
                km.partial_fit(batch)
                centers = km.cluster_centers_
                steps += 1
            passes += 1
            stopped = previous - distance < TOL * previous
            previous = distance
        centers = km.cluster_centers_.astype(np.float32)
        inertia = float(sum(squared_distances(m, centers).sum() for m in frames.matrices()))
    figures = {"init_frames": int(len(init_sample)), "passes": passes, "mini_batches": steps,
               "converged": stopped}
    return centers, inertia, figures


def learn(scp_path: str, n_clusters: int, portion: float = 0.1, seed: int = 0,
          max_frames: int = 0, batch_size: int = 10000, max_iter: int = 100,
          n_init: int = 3, num_threads: int = 1) -> KMeansModel:
    """Learns k-means centers on a seeded sample of the utterances of ``scp_path``, out of
    core (see ``fit_kmeans``)."""
    init_size = INIT_BATCHES * max(batch_size, n_clusters)
    frames, sample = training_frames(scp_path, portion, seed, max_frames, init_size)
    centers, inertia, figures = fit_kmeans(frames, sample, n_clusters, seed, batch_size,
                                           max_iter, n_init, num_threads)
    import sklearn

    settings = {
        "n_clusters": n_clusters, "portion": portion, "seed": seed, "max_frames": max_frames,
        "batch_size": batch_size, "max_iter": max_iter, "n_init": n_init,
        "num_threads": num_threads, "dim": frames.dim,
        "num_frames": frames.total, "num_utts": frames.num_utts,
        "num_utts_in_scp": len(feature_table(scp_path)), **figures,
        "inertia": inertia, "inertia_per_frame": inertia / frames.total,
        "source_scp": os.path.abspath(scp_path), "sklearn_version": sklearn.__version__,
    }
    return KMeansModel(centers, settings)


# ----------------------------------------------------------------------------- model files

def centers_digest(centers: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(centers, dtype=np.float32).tobytes()).hexdigest()


def save_model(km_dir: str, model: KMeansModel) -> None:
    """Writes centers.npy, centers.mat, then kmeans.json (last: the model is complete)."""
    os.makedirs(km_dir, exist_ok=True)
    json_path = os.path.join(km_dir, SETTINGS_JSON)
    if os.path.exists(json_path):
        os.remove(json_path)  # the old model is incomplete from here on

    settings = dict(model.settings, centers_sha1=centers_digest(model.centers))
    with atomic_path(os.path.join(km_dir, CENTERS_NPY)) as tmp, open(tmp, "wb") as f:
        np.save(f, model.centers, allow_pickle=False)
    with atomic_path(os.path.join(km_dir, CENTERS_MAT)) as tmp:
        kaldiio.save_mat(tmp, model.centers)
    with atomic_path(json_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")


def load_model(km_dir: str) -> KMeansModel:
    """Reads a model written by save_model (no pickle); checks its shape against kmeans.json."""
    if not os.path.isdir(km_dir):
        raise TokenError(f"{km_dir}: no such k-means model directory")
    json_path = os.path.join(km_dir, SETTINGS_JSON)
    npy_path = os.path.join(km_dir, CENTERS_NPY)
    for path in (json_path, npy_path):
        if not os.path.isfile(path):
            raise TokenError(f"{path} is missing: {km_dir} holds no complete k-means model "
                             "(run scripts/learn_kmeans.sh)")
    try:
        with open(json_path, encoding="utf-8") as f:
            settings = json.load(f)
        centers = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TokenError(f"{km_dir}: cannot read the model: {exc}") from exc
    expected = (settings.get("n_clusters"), settings.get("dim"))
    if centers.ndim != 2 or centers.shape != expected:
        raise TokenError(f"{npy_path}: shape {centers.shape}, {json_path} says {expected}")
    if not np.isfinite(centers).all():
        raise TokenError(f"{npy_path}: holds NaN or Inf")
    return KMeansModel(centers.astype(np.float32, copy=False), settings)


# ----------------------------------------------------------------------------- assignment

def assign(features, centers, device="cpu", batch_frames: int = 65536,
           dtype=None) -> np.ndarray:
    """Index of the nearest center (squared Euclidean) of every row of ``features`` (N x D).

    Distances are ``||x||^2 - 2 x.c + ||c||^2`` through one matmul per batch of ``batch_frames``
    rows; ``||x||^2`` is the same for every center and is left out of the argmin. Frames and
    centers are first shifted by the mean of the centers (distances are unchanged), which keeps
    the dot products small and the float32 rounding well below the gaps between centers.
    Ties go to the lowest index. ``dtype``: the torch compute type (default float32).
    Returns int32 (N,).
    """
    import torch  # here, not at the top: learning and the checks do without it

    dtype = dtype or torch.float32
    device = torch.device(device)
    c = torch.as_tensor(np.asarray(centers), dtype=torch.float64)
    shift = c.mean(dim=0)
    c = (c - shift).to(device=device, dtype=dtype)
    c_sq = (c * c).sum(dim=1)
    x_all = torch.as_tensor(np.asarray(features))
    if x_all.ndim != 2 or x_all.shape[1] != c.shape[1]:
        raise TokenError(f"features of shape {tuple(x_all.shape)} for centers of dimension "
                         f"{c.shape[1]}")
    out = np.empty(x_all.shape[0], dtype=np.int32)
    shift = shift.to(device=device, dtype=dtype)
    with torch.no_grad():
        for start in range(0, x_all.shape[0], batch_frames):
            x = x_all[start:start + batch_frames].to(device=device, dtype=dtype) - shift
            dist = torch.addmm(c_sq.unsqueeze(0), x, c.T, alpha=-2.0)  # ||c||^2 - 2 x.c
            out[start:start + len(x)] = dist.argmin(dim=1).to("cpu", torch.int32).numpy()
    return out


def assign_utterances(items: Iterable[Tuple[str, np.ndarray]], centers: np.ndarray,
                      device="cpu", batch_frames: int = 65536
                      ) -> Iterator[Tuple[str, np.ndarray]]:
    """Tokens of many utterances, batching the frames of consecutive utterances together up to
    ``batch_frames`` (a longer utterance is a batch of its own, assigned in slices)."""
    pending: List[Tuple[str, np.ndarray]] = []
    count = 0

    def flush():
        frames = np.concatenate([m for _, m in pending]) if pending else None
        tokens = assign(frames, centers, device, batch_frames)
        start = 0
        for key, matrix in pending:
            yield key, tokens[start:start + len(matrix)]
            start += len(matrix)

    for key, matrix in items:
        if pending and count + len(matrix) > batch_frames:
            yield from flush()
            pending, count = [], 0
        pending.append((key, matrix))
        count += len(matrix)
    if pending:
        yield from flush()


# ----------------------------------------------------------------------------- summary

class TokenUsage:
    """What the merge learns of a k-means token stream while it validates it: every token must
    be a center of the model, in [0, K); counts per center, and runs of repeated tokens (the
    sequence after merging repeats, as unit-based speech models use it)."""

    def __init__(self, scp_path: str, n_clusters: int):
        self.scp_path = scp_path
        self.counts = np.zeros(n_clusters, dtype=np.int64)
        self.utterances = 0
        self.runs = 0

    def add(self, key: str, tokens: np.ndarray) -> None:
        if tokens.ndim != 1:
            raise TokenError(f"{self.scp_path}: '{key}' is not a token sequence (shape "
                             f"{tokens.shape})")
        k = len(self.counts)
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= k):
            raise TokenError(f"{self.scp_path}: '{key}' has tokens outside [0, {k})")
        self.counts += np.bincount(tokens, minlength=k)
        self.utterances += 1
        self.runs += int(np.count_nonzero(tokens[1:] != tokens[:-1])) + 1 if len(tokens) else 0

    def summary(self, what: str, km_dir: str, wall_seconds: float) -> List[str]:
        """The lines the token stage prints: sizes, usage of the clusters, throughput."""
        total = int(self.counts.sum())
        k = len(self.counts)
        stats = usage_stats(self.counts)
        return [f"{what}: {self.utterances} utterances, {total} frames/tokens, K={k} "
                f"(centers of {km_dir})",
                f"token usage: {stats['used']}/{k} clusters used, entropy "
                f"{stats['entropy_bits']:.3f} bits (max {stats['max_entropy_bits']:.3f}), "
                f"perplexity {stats['perplexity']:.1f}; {self.runs} tokens after merging "
                f"repeats (mean run {total / max(self.runs, 1):.2f} frames)",
                f"{total} tokens in {wall_seconds:.1f} s wall time "
                f"({total / wall_seconds:.0f} tokens/s)"]


def usage_stats(counts: np.ndarray) -> dict:
    """Clusters used, entropy (bits) of the token distribution and its perplexity."""
    total = counts.sum()
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    return {"used": int((counts > 0).sum()), "entropy_bits": entropy,
            "perplexity": float(2 ** entropy),
            "max_entropy_bits": float(math.log2(len(counts))) if len(counts) else 0.0}
