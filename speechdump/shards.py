"""Indexed shards: tokens (or frame features) of many utterances in flat memory-mapped files.

Speech-LM training reads discrete tokens the way fairseq, Megatron and OLMo read text: one flat
array per shard plus an index, so that item ``i`` is a slice of a mapped file (no file open,
no parse per item). A shard set with prefix ``P`` is:

* ``P.json``: the header (JSON): ``format`` ("speechdump-shards"), ``version``, ``kind``
  ("tokens" or "frames"), ``dtype`` (int16/int32 for tokens: the narrowest that holds
  ``vocab_size``; float16/float32 for frames), ``row_shape`` (each frame's trailing shape: []
  for one codebook, [C] for C codebooks, [D] for D-dim features), ``vocab_size``,
  ``codebooks``, ``frame_shift`` and ``frame_rate`` (from the stage's meta.json; null where
  unknown), ``fingerprint`` (SHA-256 of the producing stage's config in meta.json) and
  ``config`` itself, ``source`` (the scp) and ``shards``: per shard its file names,
  ``count`` (utterances) and ``elements`` (values in its .bin);
* ``P.<k>.bin`` (k = 00000, 00001, ...): the values of its utterances, contiguous,
  little-endian, in order;
* ``P.<k>.idx``: ``MAGIC``, the utterance count (uint64), then per utterance its offset
  (int64, in values from the start of the .bin) and length (int64, in frames), then the ids,
  UTF-8, one per line.

Utterances are in the order of the scp they were written from (a stage's merged scp follows
the data dir's ``text``); shard ``k`` holds utterances ``k * shard_size`` onwards. Opening
checks that the files agree (sizes, counts, offsets within the .bin, the header's fields) and
refuses a set that does not, naming the file. ``ShardReader`` maps lazily, once per process:
see ``speechdump.readers``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

from speechdump.data import atomic_path
from speechdump.errors import ShardError
from speechdump.kaldi_io import writing

FORMAT = "speechdump-shards"
VERSION = 1
MAGIC = b"SDSHIDX1"
_COUNT = struct.Struct("<Q")
TOKENS, FRAMES = "tokens", "frames"
DTYPES = {TOKENS: ("int16", "int32"), FRAMES: ("float16", "float32")}


def header_path(prefix: str) -> str:
    """The header of the set ``prefix`` (a path ending in ``.json`` is taken as the header)."""
    return prefix if prefix.endswith(".json") else prefix + ".json"


def token_dtype(vocab_size: int) -> str:
    """The narrowest signed type that holds tokens ``0 .. vocab_size - 1`` (signed: -1 pads)."""
    if vocab_size <= np.iinfo(np.int16).max + 1:
        return "int16"
    if vocab_size <= np.iinfo(np.int32).max + 1:
        return "int32"
    raise ShardError(f"a vocabulary of {vocab_size} tokens does not fit int32")


def config_fingerprint(config: dict) -> str:
    """SHA-256 of a stage's config (its meta.json ``config``), key order aside."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def stage_record(scp: str) -> dict:
    """The meta.json beside ``scp`` ({} where there is none)."""
    from speechdump.job import MERGED_RECORD

    path = os.path.join(os.path.dirname(os.path.abspath(scp)), MERGED_RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- writing

class _ShardWriter:
    """One shard's .bin and .idx, written under temporary names and renamed when closed."""

    def __init__(self, prefix: str, number: int, dtype: np.dtype):
        stem = f"{prefix}.{number:05d}"
        self.bin_path, self.idx_path = stem + ".bin", stem + ".idx"
        self.dtype = dtype
        self.ids: List[str] = []
        self.offsets: List[int] = []
        self.lengths: List[int] = []
        self.elements = 0
        self._tmp = self.bin_path + ".partial"
        with writing(self.bin_path):
            self._bin = open(self._tmp, "wb")

    def add(self, utt: str, array: np.ndarray) -> None:
        with writing(self.bin_path):
            self._bin.write(np.ascontiguousarray(array, dtype=self.dtype.newbyteorder("<"))
                            .tobytes())
        self.ids.append(utt)
        self.offsets.append(self.elements)
        self.lengths.append(int(array.shape[0]))
        self.elements += int(array.size)

    def close(self) -> dict:
        with writing(self.bin_path):
            self._bin.close()
            os.replace(self._tmp, self.bin_path)
        with writing(self.idx_path), atomic_path(self.idx_path) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC + _COUNT.pack(len(self.ids)))
            f.write(np.asarray(self.offsets, dtype="<i8").tobytes())
            f.write(np.asarray(self.lengths, dtype="<i8").tobytes())
            f.write("\n".join(self.ids).encode("utf-8"))
        return {"bin": os.path.basename(self.bin_path), "idx": os.path.basename(self.idx_path),
                "count": len(self.ids), "elements": self.elements}

    def abort(self) -> None:
        self._bin.close()
        for path in (self._tmp, self.bin_path, self.idx_path):
            if os.path.exists(path):
                os.remove(path)


def write_shards(arrays: Iterable[Tuple[str, np.ndarray]], prefix: str, kind: str,
                 shard_size: int, vocab_size: Optional[int] = None,
                 float_dtype: str = "float32", meta: Optional[dict] = None,
                 frame_shift: Optional[float] = None, source: str = "") -> dict:
    """Writes ``(utt, array)`` pairs, in order, as the shard set ``prefix``; returns the header.

    ``kind`` "tokens": integer arrays [frames] or [frames, codebooks], each value in
    ``[0, vocab_size)`` (a TokenError-like ShardError names the utterance otherwise);
    ``vocab_size`` is required (the token type is chosen from it before the first value is
    written). ``kind`` "frames": float arrays [frames, dim] stored as ``float_dtype``. The
    header is written last: a set without it is incomplete.
    """
    if shard_size < 1:
        raise ShardError(f"{prefix}: shard size must be positive, got {shard_size}")
    if kind == TOKENS:
        if not vocab_size or vocab_size < 1:
            raise ShardError(f"{prefix}: token shards need the vocabulary size")
        dtype = np.dtype(token_dtype(vocab_size))
    elif kind == FRAMES:
        if float_dtype not in DTYPES[FRAMES]:
            raise ShardError(f"{prefix}: frame shards are float16 or float32, not {float_dtype}")
        dtype = np.dtype(float_dtype)
    else:
        raise ShardError(f"{prefix}: kind must be {TOKENS} or {FRAMES}, not {kind}")
    head = header_path(prefix)
    prefix = head[:-len(".json")]
    with writing(head):
        os.makedirs(os.path.dirname(os.path.abspath(head)), exist_ok=True)
        if os.path.exists(head):
            os.remove(head)  # describes shards about to be replaced
    shards: List[dict] = []
    row_shape: Optional[Tuple[int, ...]] = None
    writer: Optional[_ShardWriter] = None
    try:
        for utt, array in arrays:
            array = np.asarray(array)
            if array.ndim == 0:
                raise ShardError(f"{source or prefix}: utterance '{utt}' is a scalar")
            if row_shape is None:
                row_shape = tuple(array.shape[1:])
            elif tuple(array.shape[1:]) != row_shape:
                raise ShardError(f"{source or prefix}: utterance '{utt}' has frames of shape "
                                 f"{list(array.shape[1:])}, the first had {list(row_shape)}")
            if kind == TOKENS:
                if array.dtype.kind not in "iu":
                    raise ShardError(f"{source or prefix}: utterance '{utt}' holds "
                                     f"{array.dtype} values, not tokens")
                if array.size and (array.min() < 0 or array.max() >= vocab_size):
                    raise ShardError(f"{source or prefix}: utterance '{utt}' holds tokens "
                                     f"outside [0, {vocab_size})")
            elif array.dtype.kind != "f":
                raise ShardError(f"{source or prefix}: utterance '{utt}' holds {array.dtype} "
                                 f"values, not float features")
            if writer is None:
                writer = _ShardWriter(prefix, len(shards), dtype)
            writer.add(utt, array)
            if len(writer.ids) == shard_size:
                shards.append(writer.close())
                writer = None
        if writer is not None:
            shards.append(writer.close())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if not shards:
        raise ShardError(f"{source or prefix}: no utterances to write")
    meta = meta or {}
    config = meta.get("config", {})
    codebooks = (row_shape[0] if row_shape else 1) if kind == TOKENS else None
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "dtype": dtype.name,
              "row_shape": list(row_shape or ()), "vocab_size": vocab_size if kind == TOKENS
              else None, "codebooks": codebooks, "frame_shift": frame_shift,
              "frame_rate": round(1.0 / frame_shift, 6) if frame_shift else None,
              "fingerprint": config_fingerprint(config) if meta else None, "config": config,
              "stage": meta.get("tag"), "source": source, "shard_size": shard_size,
              "num_utterances": sum(s["count"] for s in shards), "shards": shards}
    with writing(head), atomic_path(head) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(header, f, indent=2)
        f.write("\n")
    return header


# ----------------------------------------------------------------------------- reading

def read_header(prefix: str) -> dict:
    """The checked header of the set ``prefix``; ShardError naming the file if it is not one."""
    path = header_path(prefix)
    try:
        with open(path, encoding="utf-8") as f:
            header = json.load(f)
    except OSError as exc:
        raise ShardError(f"{path}: cannot read the shard header: {exc.strerror}") from None
    except ValueError as exc:
        raise ShardError(f"{path}: not a shard header (not JSON: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ShardError(f"{path}: not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise ShardError(f"{path}: version {header.get('version')}, this reader reads "
                         f"{VERSION}")
    kind, dtype = header.get("kind"), header.get("dtype")
    if kind not in DTYPES or dtype not in DTYPES[kind]:
        raise ShardError(f"{path}: kind {kind!r} with dtype {dtype!r} is not a shard type")
    shards = header.get("shards")
    if (not isinstance(shards, list) or not shards
            or not all(isinstance(s, dict) and {"bin", "idx", "count", "elements"} <= s.keys()
                       for s in shards)):
        raise ShardError(f"{path}: its list of shards is missing or malformed")
    if sum(s["count"] for s in shards) != header.get("num_utterances"):
        raise ShardError(f"{path}: the shards hold {sum(s['count'] for s in shards)} "
                         f"utterances, num_utterances says {header.get('num_utterances')}")
    return header


@dataclass
class Shard:
    """One mapped shard: its values, and its index as arrays."""

    data: np.ndarray      # [elements] mapped .bin
    offsets: np.ndarray   # [count] int64
    lengths: np.ndarray   # [count] int64
    idx_path: str
    bin_path: str


def read_index(idx_path: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(offsets, lengths, ids) of a .idx file; ShardError naming it if malformed."""
    try:
        with open(idx_path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ShardError(f"{idx_path}: cannot read the shard index: {exc.strerror}") from None
    if raw[:len(MAGIC)] != MAGIC or len(raw) < len(MAGIC) + _COUNT.size:
        raise ShardError(f"{idx_path}: not a shard index (wrong magic)")
    (count,) = _COUNT.unpack_from(raw, len(MAGIC))
    start = len(MAGIC) + _COUNT.size
    end = start + 16 * count
    if end > len(raw):
        raise ShardError(f"{idx_path}: index of {count} utterances is cut short")
    offsets = np.frombuffer(raw, "<i8", count, start).astype(np.int64)
    lengths = np.frombuffer(raw, "<i8", count, start + 8 * count).astype(np.int64)
    ids = raw[end:].decode("utf-8").split("\n") if count else []
    if len(ids) != count:
        raise ShardError(f"{idx_path}: {len(ids)} ids for {count} index entries")
    return offsets, lengths, ids


def open_shard(directory: str, entry: dict, dtype: np.dtype, row_size: int,
               head: str) -> Tuple[Shard, List[str]]:
    """Maps one shard after checking that its .bin, .idx and header entry agree."""
    bin_path = os.path.join(directory, entry["bin"])
    idx_path = os.path.join(directory, entry["idx"])
    offsets, lengths, ids = read_index(idx_path)
    if len(ids) != entry["count"]:
        raise ShardError(f"{idx_path}: {len(ids)} utterances, the header {head} says "
                         f"{entry['count']}")
    try:
        size = os.path.getsize(bin_path)
    except OSError as exc:
        raise ShardError(f"{bin_path}: cannot read the shard: {exc.strerror}") from None
    if size != entry["elements"] * dtype.itemsize:
        raise ShardError(f"{bin_path}: {size} bytes, the header {head} says "
                         f"{entry['elements']} {dtype.name} values "
                         f"({entry['elements'] * dtype.itemsize} bytes)")
    if len(ids):
        ends = offsets + lengths * row_size
        bad = np.flatnonzero((offsets < 0) | (lengths < 0) | (ends > entry["elements"]))
        if bad.size:
            i = int(bad[0])
            raise ShardError(f"{idx_path}: utterance '{ids[i]}' (offset {offsets[i]}, "
                             f"{lengths[i]} frames) runs past the end of {bin_path} "
                             f"({entry['elements']} values)")
    data = (np.memmap(bin_path, dtype=dtype.newbyteorder("<"), mode="r") if size
            else np.zeros(0, dtype))
    return Shard(data, offsets, lengths, idx_path, bin_path), ids


def shard_starts(header: dict) -> np.ndarray:
    """The global index of each shard's first utterance, and the total last."""
    return np.concatenate([[0], np.cumsum([s["count"] for s in header["shards"]])])

