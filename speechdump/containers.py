"""``wav.scp`` entries that point into the files corpora ship as, so they are read where they lie:

=============================================  ================================================
``tar:<shard.tar>:<offset>:<size>``            the ``size`` bytes at byte ``offset`` of an
                                               uncompressed tar: one member's data, as Kaldi's
                                               ``foo.ark:123`` names an ark record
``tar:<shard.tar.gz>:<member>``                the member named ``member`` of a compressed tar
                                               (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``),
                                               read by streaming the shard
``parquet:<file.parquet>:<row group>:<row>``   the audio bytes of row ``row`` of row group
                                               ``row group`` (Hugging Face datasets' ``audio``
                                               column: a struct of ``bytes`` and ``path``)
=============================================  ================================================

``pyscripts/import_corpus.py`` writes them. The bytes are decoded by soundfile from memory;
nothing is unpacked to disk. A job reads its utterances in order, so a compressed shard is
streamed once per job: the reader keeps its place in the stream and the members passed on the
way that are still to be asked for (loader threads ask a few at once, not always in order), and
starts the stream again only for a member behind it. A parquet row group is decoded once and
kept while its rows are read.
"""

from __future__ import annotations

import os
import re
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_TAR = re.compile(r"^tar:(?P<path>.+?\.(?:tar|tar\.gz|tgz|tar\.bz2|tar\.xz)):(?P<rest>.+)$")
_PARQUET = re.compile(r"^parquet:(?P<path>.+?\.parquet):(?P<group>\d+):(?P<row>\d+)$")
AUDIO_COLUMN = "audio"
PREFIXES = ("tar:", "parquet:")  # every container entry starts with one of these


@dataclass(frozen=True)
class ContainerEntry:
    """A parsed container entry: ``path`` is the shard or parquet file it reads."""

    kind: str  # "tar" (offset and size), "tar-member" (by name) or "parquet"
    path: str
    offset: int = 0
    size: int = 0
    member: str = ""
    row_group: int = 0
    row: int = 0

    def describe(self) -> str:
        """Where the bytes are, in words, for error messages."""
        if self.kind == "tar":
            return f"tar shard {self.path}, bytes {self.offset}..{self.offset + self.size}"
        if self.kind == "tar-member":
            return f"tar shard {self.path}, member {self.member}"
        return f"parquet file {self.path}, row group {self.row_group}, row {self.row}"


def parse(entry: str) -> Optional[ContainerEntry]:
    """The container entry ``entry`` names, or None for any other wav.scp entry. A ``tar:`` or
    ``parquet:`` entry that does not fit its form is a ValueError saying the form."""
    entry = entry.strip()
    if entry.startswith("tar:"):
        match = _TAR.match(entry)
        if not match:
            raise ValueError(f"'{entry}' is not tar:<shard.tar>:<offset>:<size> nor "
                             "tar:<shard.tar.gz>:<member>")
        path, rest = match["path"], match["rest"]
        if path.endswith(COMPRESSED_TAR):
            return ContainerEntry("tar-member", path, member=rest)
        offset, _, size = rest.partition(":")
        if not (offset.isdigit() and size.isdigit()):
            raise ValueError(f"'{entry}': an uncompressed tar member is named by "
                             "<offset>:<size> in bytes")
        return ContainerEntry("tar", path, offset=int(offset), size=int(size))
    if entry.startswith("parquet:"):
        match = _PARQUET.match(entry)
        if not match:
            raise ValueError(f"'{entry}' is not parquet:<file.parquet>:<row group>:<row>")
        return ContainerEntry("parquet", match["path"], row_group=int(match["group"]),
                              row=int(match["row"]))
    return None


def tar_entry(path: str, member: tarfile.TarInfo) -> str:
    """The wav.scp entry of a tar member (``member`` as ``tarfile`` lists it from ``path``)."""
    if path.endswith(COMPRESSED_TAR):
        return f"tar:{path}:{member.name}"
    return f"tar:{path}:{member.offset_data}:{member.size}"


def parquet_entry(path: str, row_group: int, row: int) -> str:
    return f"parquet:{path}:{row_group}:{row}"


def read_bytes(entry: ContainerEntry) -> bytes:
    """The audio bytes ``entry`` points at; ValueError where they are not there (a shard
    shorter than the entry says, a member not in the shard, an empty row)."""
    if not os.path.exists(entry.path):
        raise FileNotFoundError(f"no such file: {entry.path}")
    if entry.kind == "tar":
        with open(entry.path, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
        if len(data) < entry.size:
            raise ValueError(f"truncated: {entry.describe()} wanted, the shard holds "
                             f"{os.path.getsize(entry.path)} bytes")
        return data
    if entry.kind == "tar-member":
        return _STREAMS.member(entry.path, entry.member)
    return _ROW_GROUPS.audio_bytes(entry.path, entry.row_group, entry.row)


class _Shard:
    """One compressed tar streamed from its start, and the members passed on the way that are
    still to be asked for (at most ``keep``)."""

    def __init__(self, path: str, keep: int):
        self.path, self.keep = path, keep
        self.stream = tarfile.open(path, "r|*")
        self.members = iter(self.stream)  # one iterator: a second one would start over
        self.passed: "OrderedDict[str, bytes]" = OrderedDict()

    def next_until(self, name: str) -> Optional[bytes]:
        """Reads on to member ``name``; None when the stream ends first."""
        try:
            for member in self.members:
                if not member.isfile():
                    continue
                data = self.stream.extractfile(member).read()
                if len(data) < member.size:
                    raise ValueError(f"truncated: member {member.name} of tar shard "
                                     f"{self.path} holds {len(data)} of {member.size} bytes")
                if member.name == name:
                    return data
                self.passed[member.name] = data
                while len(self.passed) > self.keep:
                    self.passed.popitem(last=False)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"tar shard {self.path} is damaged: {exc}") from exc
        return None

    def close(self) -> None:
        self.stream.close()


class _TarStreams:
    """Members of compressed tars by name. Each shard is streamed from its start once per pass
    over it, and the last ``shards`` shards asked for stay open (a job's loaders cross from one
    shard to the next). A member behind a stream's place, and no longer kept, starts that
    shard's stream again; a damaged shard is dropped, so the next request reopens it."""

    def __init__(self, keep: int = 64, shards: int = 2):
        self._lock = threading.Lock()
        self._keep, self._shards = keep, shards
        self._open: "OrderedDict[str, _Shard]" = OrderedDict()

    def member(self, path: str, name: str) -> bytes:
        with self._lock:
            shard = self._open.pop(path, None)
            for fresh in (False, True):
                if shard is None:
                    shard, fresh = _Shard(path, self._keep), True
                try:
                    data = (shard.passed.pop(name) if name in shard.passed
                            else shard.next_until(name))
                except ValueError:
                    shard.close()
                    raise
                if data is not None:
                    self._remember(shard)
                    return data
                shard.close()
                shard = None
                if fresh:
                    break
            raise ValueError(f"no member '{name}' in tar shard {path}")

    def _remember(self, shard: _Shard) -> None:
        self._open[shard.path] = shard
        while len(self._open) > self._shards:
            self._open.popitem(last=False)[1].close()


class _RowGroups:
    """Parquet row groups, decoded once (their audio column only) and kept while read: at most
    ``keep`` of them, the least recently read dropped first."""

    def __init__(self, keep: int = 2):
        self._lock = threading.Lock()
        self._keep = keep
        self._groups: "OrderedDict[tuple, list]" = OrderedDict()

    def audio_bytes(self, path: str, row_group: int, row: int) -> bytes:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns, row_group)
        with self._lock:
            rows = self._groups.pop(key, None)
            if rows is None:
                rows = _read_audio_column(path, row_group)
            self._groups[key] = rows
            while len(self._groups) > self._keep:
                self._groups.popitem(last=False)
        if row >= len(rows):
            raise ValueError(f"parquet file {path}: row group {row_group} has {len(rows)} rows, "
                             f"not a row {row}")
        value = rows[row]
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise ValueError(f"parquet file {path}, row group {row_group}, row {row}: the "
                             f"{AUDIO_COLUMN} column holds no bytes")
        return data


def _read_audio_column(path: str, row_group: int) -> list:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        if row_group >= parquet.num_row_groups:
            raise ValueError(f"parquet file {path} has {parquet.num_row_groups} row groups, not "
                             f"a row group {row_group}")
        return parquet.read_row_group(row_group, columns=[AUDIO_COLUMN]).column(0).to_pylist()
    except (OSError, KeyError) as exc:
        raise ValueError(f"parquet file {path}: {exc}") from exc


_STREAMS = _TarStreams()
_ROW_GROUPS = _RowGroups()
