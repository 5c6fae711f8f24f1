"""Kaldi ark/scp, read and written in one place.

Writing: ``ArkScpWriter`` appends arrays to ``<prefix>.ark`` as they come and its index to
``<prefix>.scp.partial``; only ``commit()`` (after the ark is flushed to disk) renames the index
to ``<prefix>.scp``. A job killed at any moment therefore leaves no scp line pointing into a
partial ark, and the presence of ``<prefix>.scp`` means the writer finished. ``sync()`` puts
what is written so far on disk and returns the two files' sizes; a writer opened with
``resume_at`` those sizes cuts whatever came after them and goes on from there. A file that cannot
be written (disk full, file size limit, permissions) raises ``WriteError``, which names it.

Reading, three ways for three uses:

- ``read_scp_table``: the scp text only (id -> location), in file order;
- ``load_entry``: one array, its ark opened for that read and closed again: no handle is held
  (safe in DataLoader workers), and memory holds one array at a time whatever the corpus size
  (k-means training reads every pass this way: no ark stays mapped);
- ``read_scp_arrays``: every array of an scp in order, each ark mapped into memory once and the
  plain float records viewed in place: fast enough for the merge of millions of lines
  (kaldiio opens and seeks the ark once per line, about 12 us each). Every other record
  (compressed matrices, NPY, integer vectors, a location with a slice) goes through kaldiio.

``ark_offset`` is the one parser of ``<ark>:<offset>`` locations (scps, and ``wav.scp`` entries
as Kaldi's ``wav-copy`` writes them); ``record_header`` the one parser of binary record headers.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from typing import Dict, Iterator, Optional, Tuple

import kaldiio
import numpy as np

from speechdump.data import read_table
from speechdump.errors import ArkFormatError, ScpReadError, WriteError

PARTIAL_SUFFIX = ".partial"

# Kaldi's CompressedMatrix method of copy-feats --compress (kSpeechFeature): lossy, see README.
KALDI_COMPRESSION = 2


def ark_offset(location: str) -> Optional[Tuple[str, int]]:
    """``(ark, offset)`` of a location ``<ark>:<offset>`` (``foo.ark:123``: the record of
    ``foo.ark`` whose data starts at byte 123, after "<key> "); None for anything else: a
    path, a pipe, a slice (``foo.ark:12[0:4]``). (A partition, not a regex: the merge parses a
    million of them.)"""
    ark, colon, offset = location.rpartition(":")
    if not ark or not offset.isdigit() or not offset.isascii():
        return None
    return ark, int(offset)


# ----------------------------------------------------------------------------- record headers

# A binary Kaldi vector or matrix record: its element type (None for a compressed matrix, whose
# values only kaldiio decodes), its shape and the byte where its data starts.
Header = Tuple[Optional[np.dtype], Tuple[int, ...], int]

# "\0B", a type token and a space, then each size as the byte 4 and an int32.
_PLAIN = {b"\0BFV ": (np.dtype(np.float32), struct.Struct("<bi")),
          b"\0BFM ": (np.dtype(np.float32), struct.Struct("<bibi")),
          b"\0BDV ": (np.dtype(np.float64), struct.Struct("<bi")),
          b"\0BDM ": (np.dtype(np.float64), struct.Struct("<bibi"))}
# Compressed matrices: the token, then float min, float range, int32 rows, int32 columns.
_COMPRESSED = (b"\0BCM ", b"\0BCM2 ", b"\0BCM3 ")
_COMPRESSED_SIZES = struct.Struct("<ffii")


def record_header(buf, offset: int) -> Optional[Header]:
    """The header of the binary vector or matrix record at ``offset`` of ``buf`` (bytes or a
    mapped file); None for any other record (NPY, integer vectors, text, a malformed size).
    Raises ArkFormatError where the header runs past the end of ``buf`` (its data is not
    looked at: ``buf`` may be the header's bytes only)."""
    plain = _PLAIN.get(buf[offset:offset + 5])
    if plain is not None:
        dtype, sizes = plain
        data = offset + 5 + sizes.size
        if data > len(buf):
            raise ArkFormatError(f"record at byte {offset} runs past the end of the file")
        fields = sizes.unpack_from(buf, offset + 5)
        if len(fields) == 2:  # vectors, most records of a merge
            marker, count = fields
            if marker != 4 or count < 0:
                return None
            shape: Tuple[int, ...] = (count,)
        else:
            marker, rows, marker2, cols = fields
            if marker != 4 or marker2 != 4 or rows < 0 or cols < 0:
                return None
            shape = (rows, cols)
        return dtype, shape, data
    for token in _COMPRESSED:
        if buf[offset:offset + len(token)] == token:
            data = offset + len(token) + _COMPRESSED_SIZES.size
            if data > len(buf):
                raise ArkFormatError(f"record at byte {offset} runs past the end of the file")
            _, _, rows, cols = _COMPRESSED_SIZES.unpack_from(buf, offset + len(token))
            return (None, (rows, cols), data) if rows >= 0 and cols >= 0 else None
    return None


def num_frames(location: str) -> int:
    """Rows of the array at ``location`` (a matrix's frames, a vector's length) from its
    header alone where it is a binary record at ``ark:offset``; anything else (text ark, slice,
    pipe, NPY) is loaded in full."""
    parts = ark_offset(location)
    if parts and os.path.isfile(parts[0]):
        with open(parts[0], "rb") as f:
            f.seek(parts[1])
            head = f.read(32)  # the longest header: "\0BCM2 " and 16 bytes of sizes
        try:
            header = record_header(head, 0)
        except ArkFormatError as exc:
            raise ArkFormatError(f"{location}: {exc}") from None
        if header is not None:
            return header[1][0]
    return int(np.asarray(kaldiio.load_mat(location)).shape[0])


# ----------------------------------------------------------------------------- reading

def read_scp_table(path: str) -> Dict[str, str]:
    """``id -> location`` (e.g. ``foo.ark:123``) in file order; reads the text only. A duplicate
    id is a DataDirError naming the line; a missing file or an id without a location an
    ScpReadError naming the scp."""
    if not os.path.isfile(path):
        raise ScpReadError(f"{path}: no such file")
    table = read_table(path)
    empty = next((key for key, location in table.items() if not location), None)
    if empty is not None:
        raise ScpReadError(f"{path}: no location after id '{empty}'")
    return table


def load_entry(location: str, key: str, scp: str, writable: bool = False) -> np.ndarray:
    """The array at ``location``, its ark opened for this read only; errors name the id, the
    scp and the location. ``writable``: a copy where kaldiio gives a read-only view (torch
    wants writable arrays)."""
    try:
        array = kaldiio.load_mat(location)
    except Exception as exc:
        raise ScpReadError(f"cannot read utterance '{key}' of {scp} from '{location}': "
                           f"{type(exc).__name__}: {exc}") from exc
    if writable and isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return array


def read_scp_arrays(scp_path: str) -> Iterator[Tuple[str, np.ndarray]]:
    """(key, array) for every line of ``scp_path``, in order. Each record's key in the ark must
    be the line's key, so a line pointing at the wrong offset is caught even when the bytes
    there happen to parse (ArkFormatError naming the scp line).

    Arrays may be read-only views of a mapped ark; a map is released with its last view.
    """
    maps: Dict[str, bytes] = {}
    with open(scp_path, encoding="utf-8") as scp:
        for lineno, line in enumerate(scp, 1):
            key, _, location = line.strip().partition(" ")
            if not key:
                continue
            location = location.strip()
            parts = ark_offset(location)
            if parts is None:
                yield key, kaldiio.load_mat(location)
                continue
            ark, start = parts
            buf = maps.get(ark)
            if buf is None:
                with open(ark, "rb") as f:
                    empty = os.fstat(f.fileno()).st_size == 0
                    buf = maps[ark] = b"" if empty else mmap.mmap(f.fileno(), 0,
                                                                   access=mmap.ACCESS_READ)
            name = key.encode("utf-8") + b" "
            if not len(name) <= start <= len(buf) or buf[start - len(name):start] != name:
                raise ArkFormatError(f"{scp_path}:{lineno}: '{key}' is not the record at "
                                     f"byte {start} of {ark}")
            try:
                header = record_header(buf, start)
            except ArkFormatError as exc:
                raise ArkFormatError(f"{scp_path}:{lineno}: '{key}' in {ark}: {exc}") from None
            if header is None or header[0] is None:  # not a plain float record: kaldiio's
                yield key, kaldiio.load_mat(location)
                continue
            # Viewed in place (inline: a function call per record costs a million-line merge
            # a tenth of a second).
            dtype, shape, data = header
            count = shape[0] if len(shape) == 1 else shape[0] * shape[1]
            if data + count * dtype.itemsize > len(buf):
                raise ArkFormatError(f"{scp_path}:{lineno}: '{key}' in {ark}: record at byte "
                                     f"{start} runs past the end of the file")
            array = np.frombuffer(buf, dtype, count, data)
            yield key, array if len(shape) == 1 else array.reshape(shape)


# ----------------------------------------------------------------------------- writing

@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turns an OSError raised inside into a WriteError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise WriteError(path, exc) from exc


class ArkScpWriter:
    """Appends (key, array) records to an ark and its scp; see the module docstring."""

    def __init__(self, ark_path: str, scp_path: str, compress: bool = False,
                 resume_at: Optional[Tuple[int, int]] = None):
        self.compress = compress
        self.ark_path = ark_path
        self.scp_path = scp_path
        self._partial_scp = scp_path + PARTIAL_SUFFIX
        self._committed = False
        self.count = 0
        with writing(ark_path):
            self._ark = _open_at(ark_path, resume_at[0] if resume_at else None)
        try:
            with writing(self._partial_scp):
                self._scp = _open_at(self._partial_scp, resume_at[1] if resume_at else None)
                if resume_at:
                    self._scp.seek(0)
                    self.count = self._scp.read().count(b"\n")
        except WriteError:
            self._ark.close()
            os.remove(ark_path)
            raise

    def write(self, key: str, array: np.ndarray) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"Kaldi keys cannot be empty or hold whitespace: {key!r}")
        offset = self._ark.tell() + len(key.encode("utf-8")) + 1  # data follows "<key> "
        array = np.ascontiguousarray(array)
        # Kaldi's binary format has no float16 and no integer matrix (codec tokens [frames,
        # codebooks]): such arrays go in kaldiio's NPY records, which kaldiio (and so ESPnet
        # and speechdump.readers) read back; Kaldi binaries do not.
        npy = array.dtype == np.float16 or (array.dtype.kind in "iu" and array.ndim > 1)
        write_function = "numpy" if npy else None
        # Kaldi compresses matrices only; vectors and integer arrays are stored as they are.
        compression = (KALDI_COMPRESSION if self.compress and array.ndim == 2
                       and array.dtype == np.float32 else None)
        with writing(self.ark_path):
            kaldiio.save_ark(self._ark, {key: array}, write_function=write_function,
                             compression_method=compression)
        with writing(self._partial_scp):
            self._scp.write(f"{key} {self.ark_path}:{offset}\n".encode("utf-8"))
        self.count += 1

    def sync(self) -> Tuple[int, int]:
        """Puts the records written so far on disk; returns the sizes of the ark and of the
        partial scp (what ``resume_at`` takes)."""
        for f, path in ((self._ark, self.ark_path), (self._scp, self._partial_scp)):
            with writing(path):
                f.flush()
                os.fsync(f.fileno())
        return self._ark.tell(), self._scp.tell()

    def commit(self) -> None:
        for f, path in ((self._ark, self.ark_path), (self._scp, self._partial_scp)):
            with writing(path):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        with writing(self.scp_path):
            os.replace(self._partial_scp, self.scp_path)
        self._committed = True

    def close(self) -> None:
        """Closes the files as they are: what ``sync`` returned stays resumable."""
        for f in (self._ark, self._scp):
            f.close()

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


def _open_at(path: str, size: Optional[int]):
    """``path`` opened for writing bytes: new (``size`` None), or cut to ``size`` bytes and
    positioned there; a file shorter than ``size`` is an OSError (it is not the file that was
    synced)."""
    if size is None:
        return open(path, "wb")
    f = open(path, "r+b")
    if os.fstat(f.fileno()).st_size < size:
        f.close()
        raise OSError(f"{path} holds fewer than the {size} bytes synced before")
    f.truncate(size)
    f.seek(size)
    return f


def write_ark_scp(ark_path: str, scp_path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Writes a whole dict at once, atomically."""
    with ArkScpWriter(ark_path, scp_path) as writer:
        for key, array in arrays.items():
            writer.write(key, array)
