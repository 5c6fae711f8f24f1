"""Discrete speech tokens: k-means over frame features, and nearest-center assignment.

A model directory (``km_dir``) holds ``centers.npy`` (float32, K x D; loaded with
``allow_pickle=False``), ``centers.mat`` (the same matrix as a binary Kaldi matrix, for Kaldi
tools) and ``kmeans.json`` (the settings and training figures). ``kmeans.json`` is written last,
so its presence means the model is complete.

Tokens are written per utterance as int32 vectors (Kaldi ``Vector<int32>``) and as a Kaldi text
table ``<utt> <t1> <t2> ...``; the token of a frame depends on that frame and the centers only,
never on how utterances were split into jobs or batched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np

from speechdump.data import atomic_path, read_table

CENTERS_NPY = "centers.npy"
CENTERS_MAT = "centers.mat"
SETTINGS_JSON = "kmeans.json"


class TokenError(Exception):
    """Bad input or output of the token stages; the message names the file (and id)."""


# ----------------------------------------------------------------------------- reading features

def read_scp_table(scp_path: str) -> Dict[str, str]:
    """An scp as id -> location in file order; a missing file or a duplicate id is a TokenError."""
    if not os.path.isfile(scp_path):
        raise TokenError(f"{scp_path}: no such file")
    try:
        table = read_table(scp_path)
    except Exception as exc:  # DataDirError: duplicate key, names file and line
        raise TokenError(str(exc)) from exc
    if not table:
        raise TokenError(f"{scp_path}: no entries")
    return table


def load_matrix(scp_path: str, key: str, location: str) -> np.ndarray:
    """One feature matrix (frames x dim) as float32; errors name the scp and the id."""
    try:
        array = kaldiio.load_mat(location)
    except Exception as exc:
        raise TokenError(f"{scp_path}: cannot read '{key}' ({location}): {exc}") from exc
    array = np.asarray(array)
    if array.ndim != 2:
        raise TokenError(f"{scp_path}: '{key}' is not a matrix (shape {array.shape})")
    return array.astype(np.float32, copy=False)


def iter_features(scp_path: str, keys: Optional[Sequence[str]] = None
                  ) -> Iterator[Tuple[str, np.ndarray]]:
    """Feature matrices of an scp (all of them, or ``keys`` in that order), read one at a time."""
    table = read_scp_table(scp_path)
    for key in (table if keys is None else keys):
        yield key, load_matrix(scp_path, key, table[key])


_ARK_OFFSET = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)$")


def num_frames(location: str) -> int:
    """Rows of the Kaldi matrix at ``location`` (``ark:offset``) from its header alone.

    Understands binary full (FM/DM) and compressed (CM/CM2/CM3) matrices; anything else
    (text ark, range, pipe) is loaded in full.
    """
    match = _ARK_OFFSET.match(location)
    if match and os.path.isfile(match["ark"]):
        with open(match["ark"], "rb") as f:
            f.seek(int(match["offset"]))
            head = f.read(2 + 4 + 8 + 5)
        if head[:2] == b"\0B":
            token, _, rest = head[2:].partition(b" ")
            if token in (b"FM", b"DM") and rest[:1] == b"\x04":
                return struct.unpack("<i", rest[1:5])[0]
            if token in (b"CM", b"CM2", b"CM3") and len(rest) >= 12:
                return struct.unpack("<i", rest[8:12])[0]
    return int(np.asarray(kaldiio.load_mat(location)).shape[0])


# ----------------------------------------------------------------------------- learning

def sample_keys(keys: Sequence[str], portion: float, seed: int) -> List[str]:
    """``ceil(portion * N)`` ids (at least one), drawn without replacement in a seeded random
    order."""
    if not 0.0 < portion <= 1.0:
        raise TokenError(f"portion must be in (0, 1], got {portion}")
    count = max(1, min(len(keys), int(math.ceil(portion * len(keys) - 1e-9))))
    order = np.random.default_rng(seed).permutation(len(keys))[:count]
    return [keys[i] for i in order]


def training_frames(scp_path: str, portion: float, seed: int, max_frames: int = 0
                    ) -> Tuple[np.ndarray, List[str]]:
    """The frames of a seeded sample of utterances, read lazily in the sampled (random) order and
    stopped at ``max_frames`` (0: no cap; the last utterance read is cut). Returns the frames
    and the ids that contributed."""
    keys = sample_keys(list(read_scp_table(scp_path)), portion, seed)
    chunks: List[np.ndarray] = []
    used: List[str] = []
    total, dim = 0, None
    for key, matrix in iter_features(scp_path, keys):
        if dim is None:
            dim = matrix.shape[1]
        elif matrix.shape[1] != dim:
            raise TokenError(f"{scp_path}: '{key}' has dimension {matrix.shape[1]}, "
                             f"'{used[0]}' has {dim}")
        if max_frames and total + len(matrix) > max_frames:
            matrix = matrix[:max_frames - total]
        if len(matrix):
            chunks.append(matrix)
            used.append(key)
            total += len(matrix)
        if max_frames and total >= max_frames:
            break
    if not total:
        raise TokenError(f"{scp_path}: the sampled utterances hold no frames")
    frames = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.isfinite(frames).all():
        raise TokenError(f"{scp_path}: the sampled features hold NaN or Inf")
    return frames, used


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


def fit_kmeans(frames: np.ndarray, n_clusters: int, seed: int, batch_size: int = 10000,
               max_iter: int = 100, n_init: int = 3,
               num_threads: int = 1) -> Tuple[np.ndarray, float]:
    """MiniBatchKMeans (k-means++ init, seeded): the centers (float32) and the inertia over
    ``frames`` (sum of squared distances to the nearest center).

    A seed gives the same centers again on the same machine and BLAS; another CPU (or
    ``OPENBLAS_CORETYPE``) picks other BLAS kernels, which moves them in the fifth digit.
    sklearn's OpenMP and BLAS threads are held to ``num_threads``, the CPUs the job was given,
    instead of every core of the node.
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if n_clusters < 1:
        raise TokenError(f"n_clusters must be positive, got {n_clusters}")
    if len(frames) < n_clusters:
        raise TokenError(f"only {len(frames)} training frames for {n_clusters} clusters: "
                         "raise --portion or --max_frames, or lower --n_clusters")
    km = MiniBatchKMeans(n_clusters=n_clusters, init="k-means++", batch_size=batch_size,
                         max_iter=max_iter, n_init=n_init, random_state=seed,
                         compute_labels=True)
    with threadpool_limits(num_threads):
        km.fit(frames)
    return km.cluster_centers_.astype(np.float32), float(km.inertia_)


def learn(scp_path: str, n_clusters: int, portion: float = 0.1, seed: int = 0,
          max_frames: int = 0, batch_size: int = 10000, max_iter: int = 100,
          n_init: int = 3, num_threads: int = 1) -> KMeansModel:
    frames, used = training_frames(scp_path, portion, seed, max_frames)
    centers, inertia = fit_kmeans(frames, n_clusters, seed, batch_size, max_iter, n_init,
                                  num_threads)
    import sklearn

    settings = {
        "n_clusters": n_clusters, "portion": portion, "seed": seed, "max_frames": max_frames,
        "batch_size": batch_size, "max_iter": max_iter, "n_init": n_init,
        "num_threads": num_threads, "dim": int(frames.shape[1]),
        "num_frames": int(len(frames)), "num_utts": len(used),
        "num_utts_in_scp": len(read_scp_table(scp_path)),
        "inertia": inertia, "inertia_per_frame": inertia / len(frames),
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


# ----------------------------------------------------------------------------- checks, summary

def check_tokens(tokens_scp: str, tokens_txt: str, reference: Sequence[str],
                 frames: Dict[str, int], n_clusters: int) -> np.ndarray:
    """Checks the merged outputs; returns the token counts per cluster (length K).

    ``tokens_scp`` and ``tokens_txt`` hold the ``reference`` ids in that order, one line each;
    every vector is int32 with ``frames[id]`` tokens, all in [0, K), equal to its text line.
    """
    counts = np.zeros(n_clusters, dtype=np.int64)
    with open(tokens_txt, encoding="utf-8") as txt:
        text_lines = [line.rstrip("\n") for line in txt]
    scp_keys = list(read_table(tokens_scp))  # raises on a duplicate id
    txt_keys = [line.split(" ", 1)[0] for line in text_lines]
    for path, keys in ((tokens_scp, scp_keys), (tokens_txt, txt_keys)):
        if keys != list(reference):
            first = next((i for i, (a, b) in enumerate(zip(keys, reference)) if a != b),
                         min(len(keys), len(reference)))
            raise TokenError(f"{path}: ids differ from the features' at line {first + 1} "
                             f"({len(keys)} ids, {len(reference)} expected)")
    for (key, vector), line in zip(kaldiio.load_scp_sequential(tokens_scp), text_lines):
        vector = np.asarray(vector)
        if vector.dtype != np.int32 or vector.ndim != 1:
            raise TokenError(f"{tokens_scp}: '{key}' is {vector.dtype} of shape {vector.shape}, "
                             "not an int32 vector")
        if len(vector) != frames[key]:
            raise TokenError(f"{tokens_scp}: '{key}' has {len(vector)} tokens for "
                             f"{frames[key]} frames")
        if len(vector) and (vector.min() < 0 or vector.max() >= n_clusters):
            raise TokenError(f"{tokens_scp}: '{key}' has tokens outside [0, {n_clusters})")
        if line.split()[1:] != [str(t) for t in vector]:
            raise TokenError(f"{tokens_txt}: the line of '{key}' differs from {tokens_scp}")
        counts += np.bincount(vector, minlength=n_clusters)
    return counts


def usage_stats(counts: np.ndarray) -> dict:
    """Clusters used, entropy (bits) of the token distribution and its perplexity."""
    total = counts.sum()
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    return {"used": int((counts > 0).sum()), "entropy_bits": entropy,
            "perplexity": float(2 ** entropy),
            "max_entropy_bits": float(math.log2(len(counts))) if len(counts) else 0.0}
