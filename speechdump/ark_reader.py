"""Reading an scp's arrays back in file order, fast enough for millions of lines.

kaldiio opens and seeks the ark once per scp line (about 12 us each); here every ark is mapped
into memory once and the common records (Kaldi binary float/double vectors and matrices) are
viewed in place. Every other record (compressed matrices, NPY, integer vectors, ``ark:offset``
with a slice) goes through kaldiio. Each record's key in the ark must be the scp line's key, so
a line pointing at the wrong offset is caught even when the bytes there happen to parse.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Dict, Iterator, Optional, Tuple

import kaldiio
import numpy as np

# Binary record header: "\0B", a 3-byte type token, then each size as the byte 4 and an int32.
_TYPES = {b"\0BFV ": (np.dtype(np.float32), struct.Struct("<bi")),
          b"\0BFM ": (np.dtype(np.float32), struct.Struct("<bibi")),
          b"\0BDV ": (np.dtype(np.float64), struct.Struct("<bi")),
          b"\0BDM ": (np.dtype(np.float64), struct.Struct("<bibi"))}


class ArkFormatError(ValueError):
    """An scp line does not point at a readable record of its key."""


def _view(buf, offset: int) -> Optional[np.ndarray]:
    """The record at ``offset`` viewed in place, or None when it is not a plain float record."""
    kind = _TYPES.get(buf[offset:offset + 5])
    if kind is None:
        return None
    dtype, header = kind
    data = offset + 5 + header.size
    if data > len(buf):
        raise ArkFormatError(f"record at byte {offset} runs past the end of the file")
    fields = header.unpack_from(buf, offset + 5)
    if len(fields) == 2:  # vectors, most records of a merge: no shape to build
        marker, count = fields
        if marker != 4 or count < 0:
            return None
        shape = None
    else:
        marker, rows, marker2, cols = fields
        if marker != 4 or marker2 != 4 or rows < 0 or cols < 0:
            return None
        count, shape = rows * cols, (rows, cols)
    if data + count * dtype.itemsize > len(buf):
        raise ArkFormatError(f"record at byte {offset} runs past the end of the file")
    array = np.frombuffer(buf, dtype, count, data)
    return array if shape is None else array.reshape(shape)


def read_scp_arrays(scp_path: str) -> Iterator[Tuple[str, np.ndarray]]:
    """(key, array) for every line of ``scp_path``, in order.

    Arrays may be read-only views of a mapped ark; a map is released with its last view.
    """
    maps: Dict[str, bytes] = {}
    with open(scp_path, encoding="utf-8") as scp:
        for lineno, line in enumerate(scp, 1):
            key, _, location = line.strip().partition(" ")
            if not key:
                continue
            location = location.strip()
            ark, colon, offset = location.rpartition(":")
            if not colon or not offset.isdigit():
                yield key, kaldiio.load_mat(location)
                continue
            buf = maps.get(ark)
            if buf is None:
                with open(ark, "rb") as f:
                    empty = os.fstat(f.fileno()).st_size == 0
                    buf = maps[ark] = b"" if empty else mmap.mmap(f.fileno(), 0,
                                                                   access=mmap.ACCESS_READ)
            start = int(offset)
            name = key.encode("utf-8") + b" "
            if not len(name) <= start <= len(buf) or buf[start - len(name):start] != name:
                raise ArkFormatError(f"{scp_path}:{lineno}: '{key}' is not the record at "
                                     f"byte {start} of {ark}")
            array = _view(buf, start)
            yield key, array if array is not None else kaldiio.load_mat(location)
