"""Kaldi ark/scp output with an atomic finish.

A job writes its arrays to ``<prefix>.ark`` as they come and its index to ``<prefix>.scp.partial``;
only ``commit()`` (after the ark is flushed to disk) renames the index to ``<prefix>.scp``. A job
killed at any moment therefore leaves no scp line pointing into a partial ark, and the presence
of ``<prefix>.scp`` means the job finished. A file that cannot be written (disk full, file size
limit, permissions) raises ``WriteError``, which names it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, Tuple

import kaldiio
import numpy as np

PARTIAL_SUFFIX = ".partial"


class WriteError(Exception):
    """An output file cannot be written; the message names it and says why."""

    def __init__(self, path: str, cause: OSError):
        # Errno and text only: the cause's own filename may be a temporary name or absent.
        reason = f"[Errno {cause.errno}] {cause.strerror}" if cause.errno else str(cause)
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.cause = cause


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turns an OSError raised inside into a WriteError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise WriteError(path, exc) from exc


# Kaldi's CompressedMatrix method of copy-feats --compress (kSpeechFeature): lossy, see README.
KALDI_COMPRESSION = 2


class ArkScpWriter:
    def __init__(self, ark_path: str, scp_path: str, compress: bool = False):
        self.compress = compress
        self.ark_path = ark_path
        self.scp_path = scp_path
        self._partial_scp = scp_path + PARTIAL_SUFFIX
        self._committed = False
        with writing(ark_path):
            self._ark = open(ark_path, "wb")
        try:
            with writing(self._partial_scp):
                self._scp = open(self._partial_scp, "w", encoding="utf-8")
        except WriteError:
            self._ark.close()
            os.remove(ark_path)
            raise
        self.count = 0

    def write(self, key: str, array: np.ndarray) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"Kaldi keys cannot be empty or hold whitespace: {key!r}")
        offset = self._ark.tell() + len(key.encode("utf-8")) + 1  # data follows "<key> "
        array = np.ascontiguousarray(array)
        # Kaldi's binary format has no float16: such arrays go in kaldiio's NPY records, which
        # kaldiio (and so ESPnet and speechdump.readers) read back; Kaldi binaries do not.
        write_function = "numpy" if array.dtype == np.float16 else None
        # Kaldi compresses matrices only; vectors and integer arrays are stored as they are.
        compression = (KALDI_COMPRESSION if self.compress and array.ndim == 2
                       and array.dtype == np.float32 else None)
        with writing(self.ark_path):
            kaldiio.save_ark(self._ark, {key: array}, write_function=write_function,
                             compression_method=compression)
        with writing(self._partial_scp):
            self._scp.write(f"{key} {self.ark_path}:{offset}\n")
        self.count += 1

    def commit(self) -> None:
        for f, path in ((self._ark, self.ark_path), (self._scp, self._partial_scp)):
            with writing(path):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        with writing(self.scp_path):
            os.replace(self._partial_scp, self.scp_path)
        self._committed = True

    def abort(self) -> None:
        """Discards what this writer wrote (committed or not), the ark included: on a full disk
        that frees the space for the job's log and for other jobs."""
        for f in (self._ark, self._scp):
            try:
                f.close()
            except OSError:  # close flushes the buffer, which fails again on a full disk
                pass
        paths = [self._partial_scp, self.ark_path] + ([self.scp_path] if self._committed else [])
        for path in paths:
            if os.path.exists(path):
                os.remove(path)

    def __enter__(self) -> "ArkScpWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_ark_scp(ark_path: str, scp_path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Writes a whole dict at once, atomically."""
    with ArkScpWriter(ark_path, scp_path) as writer:
        for key, array in arrays.items():
            writer.write(key, array)


def read_scp(scp_path: str) -> Iterator[Tuple[str, np.ndarray]]:
    """Arrays of an scp in file order, read lazily (one ark seek per entry)."""
    for key, array in kaldiio.load_scp_sequential(scp_path):
        yield key, array
