"""``wav.scp`` entries that point into the files corpora ship as, so they are read where they lie:

=============================================  ================================================
``tar:<shard.tar>:<offset>:<size>``            the ``size`` bytes at byte ``offset`` of an
                                               uncompressed tar: one member's data, as Kaldi's
                                               ``foo.ark:123`` names an ark record
``tar:<shard.tar.gz>:<index>:<member>``        the member named ``member``, the ``index``-th file
                                               (from 0) of a compressed tar (``.tar.gz``,
                                               ``.tgz``, ``.tar.bz2``, ``.tar.xz``), read by
                                               streaming the shard
``parquet:<file.parquet>:<row group>:<row>``   the audio bytes of row ``row`` of row group
                                               ``row group`` (Hugging Face datasets' ``audio``
                                               column: a struct of ``bytes`` and ``path``)
``arrow:<file.arrow>:<row>``                   the audio bytes of row ``row`` (from 0, counted
                                               over the file's record batches) of an Arrow IPC
                                               stream, as datasets' ``save_to_disk`` writes
                                               ``data-00000-of-00001.arrow``; same column
=============================================  ================================================

``pyscripts/import_corpus.py`` writes them. The bytes are decoded by soundfile from memory;
nothing is unpacked to disk. A compressed tar is read as a stream, so its entries carry each
member's place in it: the stage gives a shard's utterances to one job, in that order (``place``;
``speechdump.split``), and the job streams the shard once. The reader keeps its place in the
stream and the members passed on the way that are still to be asked for (loader threads ask a
few at once, not always in order), and starts the stream again only for a member behind it.
A parquet row group is decoded once and kept while its rows are read. An Arrow stream needs no
decoding: it is memory-mapped, its record batches point into the mapped file, and a row's bytes
are the only ones copied out.
"""

from __future__ import annotations

import bisect
import os
import re
import tarfile
import threading
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_TAR = re.compile(r"^tar:(?P<path>.+?\.(?:tar|tar\.gz|tgz|tar\.bz2|tar\.xz)):(?P<rest>.+)$")
_PARQUET = re.compile(r"^parquet:(?P<path>.+?\.parquet):(?P<group>\d+):(?P<row>\d+)$")
_ARROW = re.compile(r"^arrow:(?P<path>.+?\.arrow):(?P<row>\d+)$")
AUDIO_COLUMN = "audio"
PREFIXES = ("tar:", "parquet:", "arrow:")  # every container entry starts with one of these


@dataclass(frozen=True)
class ContainerEntry:
    """A parsed container entry: ``path`` is the shard or parquet file it reads."""

    kind: str  # "tar" (offset and size), "tar-member" (by place and name), "parquet", "arrow"
    path: str
    offset: int = 0
    size: int = 0
    index: int = 0  # a compressed tar member's place among the shard's files, from 0
    member: str = ""
    row_group: int = 0
    row: int = 0

    def describe(self) -> str:
        """Where the bytes are, in words, for error messages."""
        if self.kind == "tar":
            return f"tar shard {self.path}, bytes {self.offset}..{self.offset + self.size}"
        if self.kind == "tar-member":
            return f"tar shard {self.path}, member {self.member} (file {self.index})"
        if self.kind == "arrow":
            return f"arrow file {self.path}, row {self.row}"
        return f"parquet file {self.path}, row group {self.row_group}, row {self.row}"


def parse(entry: str) -> Optional[ContainerEntry]:
    """The container entry ``entry`` names, or None for any other wav.scp entry. A ``tar:``,
    ``parquet:`` or ``arrow:`` entry that does not fit its form is a ValueError saying the form."""
    entry = entry.strip()
    if entry.startswith("tar:"):
        match = _TAR.match(entry)
        if not match:
            raise ValueError(f"'{entry}' is not tar:<shard.tar>:<offset>:<size> nor "
                             "tar:<shard.tar.gz>:<index>:<member>")
        path, rest = match["path"], match["rest"]
        if path.endswith(COMPRESSED_TAR):
            index, _, member = rest.partition(":")
            if not (index.isdigit() and member):
                raise ValueError(f"'{entry}': a compressed tar member is named by "
                                 "<index>:<member>, its place among the shard's files and its "
                                 "name")
            return ContainerEntry("tar-member", path, index=int(index), member=member)
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
    if entry.startswith("arrow:"):
        match = _ARROW.match(entry)
        if not match:
            raise ValueError(f"'{entry}' is not arrow:<file.arrow>:<row>")
        return ContainerEntry("arrow", match["path"], row=int(match["row"]))
    return None


def tar_entry(path: str, member: tarfile.TarInfo, index: int) -> str:
    """The wav.scp entry of a tar member (``member`` as ``tarfile`` lists it from ``path``, the
    ``index``-th file there)."""
    if path.endswith(COMPRESSED_TAR):
        return f"tar:{path}:{index}:{member.name}"
    return f"tar:{path}:{member.offset_data}:{member.size}"


def parquet_entry(path: str, row_group: int, row: int) -> str:
    return f"parquet:{path}:{row_group}:{row}"


def arrow_entry(path: str, row: int) -> str:
    return f"arrow:{path}:{row}"


def place(entry: ContainerEntry) -> Tuple[int, ...]:
    """Where in its file ``entry`` lies, in reading order."""
    if entry.kind == "tar":
        return (entry.offset,)
    if entry.kind == "tar-member":
        return (entry.index,)
    if entry.kind == "arrow":
        return (entry.row,)
    return (entry.row_group, entry.row)


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
        return _STREAMS.member(entry.path, entry.index, entry.member)
    if entry.kind == "arrow":
        return _ARROW_FILES.audio_bytes(entry.path, entry.row)
    return _ROW_GROUPS.audio_bytes(entry.path, entry.row_group, entry.row)


class _Shard:
    """One compressed tar streamed from its start, and the members passed on the way that are
    still to be asked for (at most ``keep``)."""

    def __init__(self, path: str, keep: int):
        self.path, self.keep = path, keep
        self.stream = tarfile.open(path, "r|*")
        self.members = iter(self.stream)  # one iterator: a second one would start over
        self.files = 0  # files read so far
        self.passed: "OrderedDict[int, Tuple[str, bytes]]" = OrderedDict()  # by place

    def take(self, index: int, name: str) -> Optional[bytes]:
        """File ``index``, read on to if it is ahead; None when it is behind and no longer
        kept, or the stream ends first. A file there of another name is a ValueError: the
        shard is not the one the entry was made from."""
        if index in self.passed:
            found, data = self.passed.pop(index)
        elif index < self.files:
            return None
        else:
            found, data = self._next_until(index)
            if found is None:
                return None
        if found != name:
            raise ValueError(f"tar shard {self.path}: file {index} is {found}, not {name} (the "
                             "shard changed since its entries were written: import it again)")
        return data

    def _next_until(self, index: int) -> Tuple[Optional[str], bytes]:
        try:
            for member in self.members:
                # A streamed TarFile lists every member it passed: a shard of a million
                # members would hold ~450 MB of them. Its iterator reads on past an empty list.
                self.stream.members = []
                if not member.isfile():
                    continue
                data = self.stream.extractfile(member).read()
                if len(data) < member.size:
                    raise ValueError(f"truncated: member {member.name} of tar shard "
                                     f"{self.path} holds {len(data)} of {member.size} bytes")
                self.files += 1
                if self.files - 1 == index:
                    return member.name, data
                self.passed[self.files - 1] = (member.name, data)
                while len(self.passed) > self.keep:
                    self.passed.popitem(last=False)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"tar shard {self.path} is damaged: {exc}") from exc
        return None, b""

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

    def member(self, path: str, index: int, name: str) -> bytes:
        with self._lock:
            shard = self._open.pop(path, None)
            for fresh in (False, True):
                if shard is None:
                    shard, fresh = _Shard(path, self._keep), True
                try:
                    data = shard.take(index, name)
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
            raise ValueError(f"tar shard {path} has no file {index} ({name}): it holds fewer")

    def _remember(self, shard: _Shard) -> None:
        self._open[shard.path] = shard
        while len(self._open) > self._shards:
            self._open.popitem(last=False)[1].close()


@contextmanager
def reading(sources: Iterable[str]) -> Iterator[None]:
    """While a job reads ``sources`` (wav.scp entries, about in this order): the readers know
    what is still to come, and drop what is done (see :class:`_RowGroups`)."""
    entries = (parse(source.strip()) for source in sources)
    rows = Counter((e.path, e.row_group) for e in entries if e is not None and e.kind == "parquet")
    _ROW_GROUPS.announce(rows)
    try:
        yield
    finally:
        _ROW_GROUPS.withdraw(rows)


class _RowGroups:
    """Parquet row groups, decoded once (their audio column only, left in Arrow buffers) and
    kept while read. The files stay open meanwhile: a file's footer is read once, not once per
    row group.

    Within :func:`reading`, a row group whose rows were announced is kept until the last of them
    has been read, then dropped at once: a loader thread that falls behind the others never makes
    its group be read twice, and a job holds about one group per loader thread. Other groups
    (rows not announced) are kept ``keep`` at a time, the least recently read dropped first;
    announced ones past ``hold`` likewise, so memory stays bounded whatever the reading order."""

    def __init__(self, keep: int = 2, hold: int = 16):
        self._lock = threading.Lock()
        self._keep, self._hold = keep, hold
        self._groups: "OrderedDict[tuple, object]" = OrderedDict()  # version + group: column
        self._files: "OrderedDict[tuple, object]" = OrderedDict()
        self._unread: Counter = Counter()  # (path, row group): announced reads still to come

    def announce(self, entries: Counter) -> None:
        with self._lock:
            self._unread.update(entries)

    def withdraw(self, entries: Counter) -> None:
        """Takes back what :meth:`announce` added and was not read."""
        with self._lock:
            for key, count in entries.items():
                left = self._unread[key] - count
                if left > 0:
                    self._unread[key] = left
                else:
                    del self._unread[key]

    def audio_bytes(self, path: str, row_group: int, row: int) -> bytes:
        stat = os.stat(path)
        version = (path, stat.st_size, stat.st_mtime_ns)
        key = (*version, row_group)
        with self._lock:
            column = self._groups.pop(key, None)
            if column is None:
                column = _read_audio_column(self._file(version), path, row_group)
            if row >= len(column):
                raise ValueError(f"parquet file {path}: row group {row_group} has {len(column)} "
                                 f"rows, not a row {row}")
            data = column[row].as_py()
            self._settle(key, column, (path, row_group))
        if not data:
            raise ValueError(f"parquet file {path}, row group {row_group}, row {row}: the "
                             f"{AUDIO_COLUMN} column holds no bytes")
        return data

    def _settle(self, key: tuple, column, announced: tuple) -> None:
        """Keeps the group just read unless that was its last announced row; drops the groups
        past the bounds (the caller holds the lock)."""
        if self._unread[announced] > 0:
            self._unread[announced] -= 1
            if self._unread[announced] == 0:
                del self._unread[announced]
                return
        self._groups[key] = column
        held, others = [], []  # oldest first
        for k in self._groups:
            (held if (k[0], k[3]) in self._unread else others).append(k)
        for k in held[:max(0, len(held) - self._hold)] + others[:max(0, len(others) - self._keep)]:
            del self._groups[k]

    def _file(self, version: tuple):
        """The open ``pyarrow.parquet.ParquetFile`` of this version of a file (the caller holds
        the lock)."""
        import pyarrow.parquet as pq

        parquet = self._files.pop(version, None)
        if parquet is None:
            try:
                parquet = pq.ParquetFile(version[0])
            except (OSError, KeyError) as exc:
                raise ValueError(f"parquet file {version[0]}: {exc}") from exc
        self._files[version] = parquet
        while len(self._files) > self._keep:
            self._files.popitem(last=False)[1].close()
        return parquet


def _read_audio_column(parquet, path: str, row_group: int):
    """The audio bytes of a row group as one Arrow array (the ``bytes`` field of datasets'
    struct, or the column itself where it holds bytes)."""
    try:
        if row_group >= parquet.num_row_groups:
            raise ValueError(f"parquet file {path} has {parquet.num_row_groups} row groups, not "
                             f"a row group {row_group}")
        column = parquet.read_row_group(row_group, columns=[AUDIO_COLUMN]).column(0)
    except (OSError, KeyError) as exc:
        raise ValueError(f"parquet file {path}: {exc}") from exc
    column = column.combine_chunks()
    if not column.type.num_fields:
        return column
    field = column.type.get_field_index("bytes")
    if field < 0:
        raise ValueError(f"parquet file {path}: the {AUDIO_COLUMN} column is a struct without "
                         f"'bytes' ({column.type})")
    return column.flatten()[field]  # flatten, not field(): a null struct gives a null row


class _ArrowFiles:
    """Arrow IPC stream files, memory-mapped and kept while read: at most ``keep`` of them, the
    least recently read dropped first. A file's record batches are found once (the stream is
    read through, its buffers left in the mapped file); a row is looked up among them."""

    def __init__(self, keep: int = 4):
        self._lock = threading.Lock()
        self._keep = keep
        self._files: "OrderedDict[tuple, Tuple[list, list]]" = OrderedDict()

    def audio_bytes(self, path: str, row: int) -> bytes:
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            mapped = self._files.pop(key, None)
            if mapped is None:
                mapped = _map_audio_column(path)
            self._files[key] = mapped
            while len(self._files) > self._keep:
                self._files.popitem(last=False)
        starts, batches = mapped
        if row >= starts[-1]:
            raise ValueError(f"arrow file {path} has {starts[-1]} rows, not a row {row}")
        batch = bisect.bisect_right(starts, row) - 1
        value = batches[batch][row - starts[batch]].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not data:
            raise ValueError(f"arrow file {path}, row {row}: the {AUDIO_COLUMN} column holds no "
                             "bytes")
        return data


def _map_audio_column(path: str) -> Tuple[list, list]:
    """The row each record batch of the Arrow stream at ``path`` starts at (the number of rows
    last), and each batch's audio column, left in the memory-mapped file."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.memory_map(path))
        names = reader.schema.names
        if AUDIO_COLUMN not in names:
            raise ValueError(f"arrow file {path} has no {AUDIO_COLUMN} column (its columns: "
                             f"{', '.join(names)})")
        column = names.index(AUDIO_COLUMN)
        batches = [batch.column(column) for batch in reader]
    except pa.ArrowInvalid as exc:
        raise ValueError(f"arrow file {path} is not an Arrow IPC stream (datasets' save_to_disk "
                         f"layout): {exc}") from exc
    except OSError as exc:
        raise ValueError(f"arrow file {path}: {exc}") from exc
    starts = [0]
    for batch in batches:
        starts.append(starts[-1] + len(batch))
    return starts, batches


_STREAMS = _TarStreams()
_ROW_GROUPS = _RowGroups()
_ARROW_FILES = _ArrowFiles()
