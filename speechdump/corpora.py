"""Corpora as they ship, made Kaldi data dirs without copying audio: each utterance's
``wav.scp`` entry points into its shard (``speechdump.containers``).

Formats:

- ``webdataset``: tar shards (``.tar``, or compressed: ``.tar.gz``, ``.tgz``, ...) whose members
  ``<key>.<ext>`` group by key (the member's path up to the first dot of its file name, as
  WebDataset groups them): one audio member (``.flac``, ``.wav``, ``.mp3``, ``.ogg``, ``.opus``)
  and optionally ``.json`` (text, speaker, duration) and ``.txt`` (text).
- ``hf``: Hugging Face datasets files: parquet files, or the Arrow stream files of a
  ``save_to_disk`` folder (``data-00000-of-0000N.arrow``, in the order its ``state.json`` lists
  them), with an ``audio`` column (a struct of ``bytes`` and ``path``) and optionally an id,
  text and speaker column (see ``FIELDS``).
- ``lhotse``: Lhotse cut manifests over recordings on disk (LibriHeavy's layout): ``wav.scp``
  over the recordings and ``segments`` for the cuts.
- ``shar``: Lhotse Shar shards (``cuts.000000.jsonl.gz`` beside ``recording.000000.tar``): each
  cut's audio is the member ``<cut id>.<format>`` of the recording tar, followed by the member
  ``<cut id>.json`` (its recording manifest); text and speaker come from the supervisions.
- ``nemo``: NeMo tarred audio datasets: ``audio_<N>.tar`` shards whose members are named by the
  manifest lines' ``audio_filepath`` (``tarred_audio_manifest.json``, each line with its
  ``shard_id``, or one ``manifest_<N>.json`` per shard, in ``sharded_manifests/`` or beside the
  shards).

Each source gives ``Record``s; ``write_data_dir`` makes their keys Kaldi-safe ids, refuses two
keys that would become one id (naming both), and writes ``wav.scp`` (and ``segments`` for cuts
of recordings), ``utt2spk`` (the speaker, else the utterance itself), ``spk2utt``, ``text``
(where the source has transcripts) and ``utt2dur`` (where it knows every duration), sorted as
Kaldi sorts (``LC_ALL=C``).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from speechdump.containers import COMPRESSED_TAR, arrow_entry, parquet_entry, tar_entry
from speechdump.data import write_table
from speechdump.errors import DataDirError

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus")
# The names each field goes by, first found wins: in a WebDataset member's JSON, or a column.
FIELDS = {
    "id": ("id", "key", "utt_id", "audio_id", "segment_id"),
    "text": ("text", "transcript", "transcription", "sentence", "normalized_text"),
    "speaker": ("speaker", "speaker_id", "spk", "spk_id", "client_id"),
    "duration": ("duration", "duration_seconds"),
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
TAR_SUFFIXES = (".tar",) + COMPRESSED_TAR
# Lhotse Shar names a shard's files <field><shard suffix><extension>: cuts.000000.jsonl.gz
# beside recording.000000.tar (the suffix is empty when Shar was written without sharding).
_SHAR_CUTS = re.compile(r"^cuts(?P<suffix>.*?)\.jsonl(?:\.gz)?$")
_SHAR_RECORDING = re.compile(r"^recording(?P<suffix>.*?)\.(?:tar|tar\.gz|tgz|tar\.bz2|tar\.xz)$")
# NeMo: one manifest over every shard (each line names its shard_id), or one per shard, its
# number in the name (NeMo's own pattern); shards audio_<N>.tar.
_NEMO_MANIFEST = "tarred_audio_manifest.json"
_NEMO_SHARD_MANIFEST = re.compile(r"^manifest[^/]*_(?P<shard>\d+)[^/]*\.json$")
_NEMO_SHARD_MANIFEST_DIR = "sharded_manifests"
# A file NeMo tarred once but that several lines read (at different offsets): the lines after
# the first name it <stem>-sub<k><ext>, the member is <stem><ext>.
_NEMO_REPEAT = re.compile(r"^(?P<stem>.+)-sub\d+(?P<ext>\.\w+)?$")


@dataclass(frozen=True)
class Record:
    key: str  # the source's own name of the utterance
    entry: str  # its wav.scp entry
    origin: str  # where it is, in words (shard and member, file and row), for messages
    text: Optional[str] = None
    speaker: Optional[str] = None
    duration: Optional[float] = None
    # A segment of a longer recording (Lhotse cuts): its recording's id, start and end (s).
    recording: Optional[str] = None
    start: float = 0.0
    end: Optional[float] = None


def kaldi_id(key: str) -> str:
    """``key`` as a Kaldi id: every run of characters other than letters, digits, ``.``, ``_``
    and ``-`` (blanks, slashes, ...) becomes one ``_``."""
    return _UNSAFE.sub("_", key).strip("_")


def expand_sources(sources: Sequence[str], suffixes: Sequence[str]) -> List[str]:
    """Files of ``sources`` (files, globs, directories searched for ``suffixes``), sorted and
    without repeats; a source that names nothing is a DataDirError."""
    files: List[str] = []
    for source in sources:
        if os.path.isdir(source):
            found = [os.path.join(root, name) for root, _, names in os.walk(source)
                     for name in names if name.endswith(tuple(suffixes))]
        elif os.path.isfile(source):
            found = [source]
        else:
            found = [f for f in glob.glob(source) if os.path.isfile(f)]
        if not found:
            raise DataDirError(f"{source}: no {' or '.join(suffixes)} file there")
        files.extend(os.path.abspath(f) for f in found)
    return sorted(set(files))


def _field(meta: dict, name: str):
    for alias in FIELDS[name]:
        if meta.get(alias) not in (None, ""):
            return meta[alias]
    return None


def webdataset_records(shards: Iterable[str]) -> Iterator[Record]:
    """The utterances of WebDataset tar shards, in shard and member order."""
    for path in shards:
        groups: Dict[str, dict] = {}
        try:
            with tarfile.open(path, "r:*") as tar:
                files = 0
                for member in tar:
                    if not member.isfile():
                        continue
                    files += 1
                    folder, name = posixpath.split(member.name)
                    stem, _, ext = name.partition(".")
                    parts = groups.setdefault(posixpath.join(folder, stem), {})
                    ext = ext.lower()
                    if ext in ("json", "txt"):
                        parts[ext] = tar.extractfile(member).read().decode("utf-8")
                    else:
                        parts[ext] = (member, files - 1)
        except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
            raise DataDirError(f"tar shard {path}: {exc}") from exc
        for key, parts in groups.items():
            audio = next((parts[ext] for ext in AUDIO_EXTENSIONS if ext in parts), None)
            if audio is None:
                wanted = ", ".join("." + ext for ext in AUDIO_EXTENSIONS)
                found = ", ".join("." + ext for ext in sorted(parts))
                raise DataDirError(f"tar shard {path}, key '{key}': no audio member ({wanted}); "
                                   f"it has {found}")
            try:
                meta = json.loads(parts["json"]) if "json" in parts else {}
            except json.JSONDecodeError as exc:
                raise DataDirError(f"tar shard {path}, member {key}.json: {exc}") from exc
            text = _field(meta, "text") or (parts["txt"].strip() if "txt" in parts else None)
            speaker, duration = _field(meta, "speaker"), _field(meta, "duration")
            member, index = audio
            yield Record(key, tar_entry(path, member, index),
                         f"tar shard {path}, member {member.name}",
                         text=text, speaker=None if speaker is None else str(speaker),
                         duration=None if duration is None else float(duration))


def hf_files(sources: Sequence[str]) -> List[str]:
    """Files of Hugging Face datasets sources: a ``save_to_disk`` folder gives the Arrow files
    its ``state.json`` lists; any other folder is searched for parquet files; a file or glob is
    taken as it is (``.parquet`` or ``.arrow``)."""
    files: List[str] = []
    for source in sources:
        if os.path.isfile(os.path.join(source, "state.json")):
            files.extend(_saved_arrow_files(source))
        elif os.path.isfile(os.path.join(source, "dataset_dict.json")):
            splits = sorted(name for name in os.listdir(source)
                            if os.path.isfile(os.path.join(source, name, "state.json")))
            raise DataDirError(f"{source} is a DatasetDict saved by save_to_disk: name one split's "
                               f"folder ({', '.join(os.path.join(source, s) for s in splits)})")
        else:
            files.extend(expand_sources([source], (".parquet",)))
    return sorted(set(files))


def _saved_arrow_files(folder: str) -> List[str]:
    state_path = os.path.join(folder, "state.json")
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        names = [item["filename"] for item in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataDirError(f"{state_path} does not list the dataset's files as datasets' "
                           f"save_to_disk writes them (_data_files): {exc!r}") from exc
    if state.get("_indices_data_files"):
        raise DataDirError(f"{state_path}: the rows are picked through an indices file; the data "
                           "files hold other rows too (save it again with save_to_disk, which "
                           "writes only the picked rows)")
    files = [os.path.abspath(os.path.join(folder, name)) for name in names]
    for name, path in zip(names, files):
        if not os.path.isfile(path):
            raise DataDirError(f"{state_path} lists {name}, which is not there")
    if not files:
        raise DataDirError(f"{state_path} lists no data file")
    return files


def hf_records(files: Iterable[str]) -> Iterator[Record]:
    """The rows of Hugging Face datasets files (parquet; the Arrow streams of ``save_to_disk``),
    in file, (row group) and row order. Only the id, text and speaker columns (and the audio
    path) are read here, never the audio."""
    for path in files:
        rows = _arrow_rows(path) if path.endswith(".arrow") else _parquet_rows(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        for entry, origin, place, meta, audio_path in rows:
            key = (meta.get("id") or
                   (os.path.splitext(os.path.basename(audio_path))[0] if audio_path
                    else f"{stem}-{place}"))
            yield Record(str(key), entry, origin, text=meta.get("text"),
                         speaker=None if meta.get("speaker") is None else str(meta["speaker"]),
                         duration=None if meta.get("duration") is None
                         else float(meta["duration"]))


_HfRow = Tuple[str, str, str, dict, Optional[str]]  # entry, origin, place, fields, audio path


def _hf_columns(names: Sequence[str], what: str) -> Dict[str, Optional[str]]:
    """The column each field is read from (None where there is none), for ``what``."""
    if "audio" not in names:
        raise DataDirError(f"{what} has no audio column (its columns: {', '.join(names)})")
    return {field: next((c for c in FIELDS[field] if c in names), None)
            for field in ("id", "text", "speaker", "duration")}


def _parquet_rows(path: str) -> Iterator[_HfRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except OSError as exc:
        raise DataDirError(f"parquet file {path}: {exc}") from exc
    wanted = _hf_columns(parquet.schema_arrow.names, f"parquet file {path}")
    columns = [c for c in wanted.values() if c] + ["audio.path"]
    for group in range(parquet.num_row_groups):
        rows = parquet.read_row_group(group, columns=columns).to_pylist()
        for row, values in enumerate(rows):
            meta = {field: values.get(column) for field, column in wanted.items() if column}
            yield (parquet_entry(path, group, row),
                   f"parquet file {path}, row group {group}, row {row}", f"{group}-{row}", meta,
                   (values.get("audio") or {}).get("path"))


def _arrow_rows(path: str) -> Iterator[_HfRow]:
    """The rows of an Arrow IPC stream (datasets' ``save_to_disk`` files), memory-mapped: the
    audio bytes stay in the file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = pa.ipc.open_stream(pa.memory_map(path)).read_all()
    except pa.ArrowInvalid as exc:
        raise DataDirError(f"arrow file {path} is not an Arrow IPC stream (datasets' save_to_disk "
                           f"layout): {exc}") from exc
    except OSError as exc:
        raise DataDirError(f"arrow file {path}: {exc}") from exc
    wanted = _hf_columns(table.schema.names, f"arrow file {path}")
    columns = {field: table.column(column).to_pylist()
               for field, column in wanted.items() if column}
    audio = table.column("audio")
    paths = (pc.struct_field(audio, "path").to_pylist()
             if pa.types.is_struct(audio.type) and audio.type.get_field_index("path") >= 0
             else [None] * table.num_rows)
    for row in range(table.num_rows):
        yield (arrow_entry(path, row), f"arrow file {path}, row {row}", str(row),
               {field: values[row] for field, values in columns.items()}, paths[row])


def lhotse_records(manifests: Iterable[str]) -> Iterator[Record]:
    """The cuts of Lhotse cut manifests (``.jsonl``, ``.jsonl.gz``), each a segment of its
    recording: a file (or a command, run as a wav.scp pipe) read where it lies. What a Kaldi
    data dir cannot say is refused, naming the cut: a recording split over several files, one
    channel of a multi-channel recording (``--channel`` picks one for every utterance), audio
    behind a URL (nothing downloads) or held in memory or a Shar field."""
    from lhotse import load_manifest_lazy

    for path in manifests:
        for cut in load_manifest_lazy(path):
            recording = getattr(cut, "recording", None)
            origin = f"Lhotse manifest {path}, cut {cut.id}"
            if recording is None:
                raise DataDirError(f"{origin}: no recording (features-only cuts have no audio)")
            if len(recording.sources) != 1:
                raise DataDirError(f"{origin}: recording {recording.id} is split over "
                                   f"{len(recording.sources)} sources (one per channel); a "
                                   "wav.scp entry names one")
            source = recording.sources[0]
            channels = cut.channel if isinstance(cut.channel, list) else [cut.channel]
            if recording.num_channels > 1 and sorted(channels) != list(range(
                    recording.num_channels)):
                raise DataDirError(f"{origin}: channel {cut.channel} of {recording.num_channels}; "
                                   "a Kaldi data dir has no per-utterance channel (the stages' "
                                   "--channel N picks one for every utterance)")
            if source.type == "file":
                entry = os.path.abspath(source.source)
            elif source.type == "command":
                entry = f"{source.source} |"
            else:
                raise DataDirError(f"{origin}: its audio is a '{source.type}' source, which is "
                                   "not read in place (files and commands are)")
            supervisions = list(cut.supervisions)
            texts = [s.text for s in supervisions if s.text]
            speaker = next((s.speaker for s in supervisions if s.speaker), None)
            yield Record(cut.id, entry, origin, text=" ".join(texts) if texts else None,
                         speaker=speaker, duration=cut.duration, recording=recording.id,
                         start=cut.start, end=cut.start + cut.duration)


def _json_lines(path: str, what: str) -> Iterator[Tuple[int, dict]]:
    """(line number, object) of each line of a JSON-lines file (gzipped: ``.gz``)."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz")
              else open(path, encoding="utf-8")) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataDirError(f"{what} {path}, line {number}: {exc}") from exc
                if not isinstance(value, dict):
                    raise DataDirError(f"{what} {path}, line {number}: not a JSON object")
                yield number, value
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataDirError(f"{what} {path}: {exc}") from exc


def _tar_files(path: str, what: str) -> List[tarfile.TarInfo]:
    """The file members of a tar, in order (an uncompressed ``.tar`` is read as one, so that
    the offsets its entries carry are the file's)."""
    try:
        with tarfile.open(path, "r:" if path.endswith(".tar") else "r:*") as tar:
            return [member for member in tar if member.isfile()]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataDirError(f"{what} {path}: {exc}") from exc


def shar_cuts_files(sources: Sequence[str]) -> List[str]:
    """The cuts files of Lhotse Shar sources: cuts files, or folders searched for them
    (``cuts.000000.jsonl.gz``). A recording shard in a searched folder without its cuts file is
    refused: its audio would be left out unsaid."""
    files: List[str] = []
    for source in sources:
        if not os.path.isdir(source):
            files.extend(expand_sources([source], (".jsonl", ".jsonl.gz")))
            continue
        found = []
        for root, _, names in os.walk(source):
            suffixes = {m["suffix"] for m in map(_SHAR_CUTS.match, names) if m}
            for name in sorted(names):
                match = _SHAR_RECORDING.match(name)
                if match and match["suffix"] not in suffixes:
                    raise DataDirError(f"Lhotse Shar recording shard {os.path.join(root, name)} "
                                       f"has no cuts file beside it (cuts{match['suffix']}"
                                       ".jsonl.gz)")
            found.extend(os.path.abspath(os.path.join(root, n)) for n in names
                         if _SHAR_CUTS.match(n))
        if not found:
            raise DataDirError(f"{source}: no Lhotse Shar cuts file (cuts.000000.jsonl.gz) there")
        files.extend(found)
    return sorted(set(files))


def _shar_recording_shard(cuts_path: str) -> str:
    folder, name = os.path.split(cuts_path)
    match = _SHAR_CUTS.match(name)
    if not match:
        raise DataDirError(f"{cuts_path} is not named as Lhotse Shar names a shard's cuts "
                           "(cuts.000000.jsonl.gz): its recording shard is found by that name")
    found = [path for path in (os.path.join(folder, f"recording{match['suffix']}{ext}")
                               for ext in TAR_SUFFIXES) if os.path.isfile(path)]
    if not found:
        raise DataDirError(f"Lhotse Shar cuts {cuts_path}: no recording shard beside it "
                           f"(recording{match['suffix']}.tar): Shar written without the "
                           "recording field has no audio to read")
    if len(found) > 1:
        raise DataDirError(f"Lhotse Shar cuts {cuts_path}: two recording shards beside it: "
                           f"{' and '.join(found)}")
    return found[0]


def shar_records(cuts_files: Iterable[str]) -> Iterator[Record]:
    """The cuts of Lhotse Shar shards, each the audio member Shar wrote for it. Shar writes a
    shard's members in its cuts' order, two per cut (``<cut id>.<format>``, then
    ``<cut id>.json``); cuts and members are matched in that order by cut id, and what does not
    line up is refused, naming the shard and the cut or member. A cut over a part of its member
    (changed after Shar wrote it) becomes a segment of it."""
    for cuts_path in cuts_files:
        shard = _shar_recording_shard(cuts_path)
        files = _tar_files(shard, "Lhotse Shar recording shard")
        if len(files) % 2:
            raise DataDirError(f"Lhotse Shar recording shard {shard} holds {len(files)} files: "
                               "Shar writes two per cut (its audio, then its manifest)")
        cuts = 0
        for cuts, (line, cut) in enumerate(_json_lines(cuts_path, "Lhotse Shar cuts"), 1):
            origin = (f"Lhotse Shar shard {shard}, cut {cut.get('id')} ({cuts_path}, line "
                      f"{line})")
            if not cut.get("id"):
                raise DataDirError(f"{origin}: the cut has no id")
            if 2 * cuts > len(files):
                raise DataDirError(f"{origin}: no member for it (the shard holds "
                                   f"{len(files) // 2} cuts' audio)")
            index = 2 * (cuts - 1)
            audio, manifest = files[index], files[index + 1]
            stem = posixpath.splitext(audio.name)[0]
            if stem != cut["id"] or posixpath.splitext(manifest.name)[0] != cut["id"]:
                raise DataDirError(f"{origin}: its members would be {audio.name} and "
                                   f"{manifest.name}, which are another cut's: the cuts file and "
                                   "the shard do not line up")
            if audio.name.endswith(".nodata"):
                raise DataDirError(f"{origin}: Shar holds no audio for the cut ({audio.name})")
            yield _shar_record(cut, origin, tar_entry(shard, audio, index))
        if 2 * cuts < len(files):
            raise DataDirError(f"Lhotse Shar shard {shard}: member {files[2 * cuts].name} has "
                               f"no cut in {cuts_path} (it has {cuts} cuts, the shard "
                               f"{len(files) // 2})")


def _shar_record(cut: dict, origin: str, entry: str) -> Record:
    recording = cut.get("recording")
    if not isinstance(recording, dict):
        raise DataDirError(f"{origin}: the cut has no recording field")
    sources = recording.get("sources") or []
    if len(sources) != 1 or sources[0].get("type") != "shar":
        kinds = ", ".join(f"'{source.get('type')}'" for source in sources) or "none"
        raise DataDirError(f"{origin}: its recording's source is {kinds}, not the placeholder "
                           "Shar writes ('shar'): the cuts file is not this shard's")
    channels = cut.get("channel")
    channels = sorted(channels if isinstance(channels, list) else [channels])
    if channels != sorted(recording.get("channel_ids") or sources[0].get("channels") or []):
        raise DataDirError(f"{origin}: channel {cut.get('channel')} of a member holding "
                           f"{recording.get('channel_ids')}; a Kaldi data dir has no "
                           "per-utterance channel")
    try:
        start, duration = float(cut.get("start", 0.0)), float(cut["duration"])
        whole, rate = float(recording["duration"]), int(recording["sampling_rate"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataDirError(f"{origin}: no valid start, duration or sampling rate: "
                           f"{exc!r}") from exc
    texts = [s["text"] for s in cut.get("supervisions") or [] if s.get("text")]
    speaker = next((s["speaker"] for s in cut.get("supervisions") or [] if s.get("speaker")),
                   None)
    part = {}
    if start > 0 or abs(duration - whole) >= 0.5 / rate:
        part = {"recording": cut["id"], "start": start, "end": start + duration}
    return Record(cut["id"], entry, origin, text=" ".join(texts) if texts else None,
                  speaker=None if speaker is None else str(speaker), duration=duration, **part)


def nemo_manifests(sources: Sequence[str]) -> List[str]:
    """The manifests of NeMo tarred datasets: manifest files, or folders searched for them. In a
    searched folder each dataset (bucket) is read once: from ``tarred_audio_manifest.json``
    where it has one, else from its ``manifest_<N>.json`` files."""
    files: List[str] = []
    for source in sources:
        if not os.path.isdir(source):
            files.extend(expand_sources([source], (".json",)))
            continue
        whole, sharded = [], []
        for root, _, names in os.walk(source):
            if _NEMO_MANIFEST in names:
                whole.append(os.path.join(root, _NEMO_MANIFEST))
            sharded.extend(os.path.join(root, n) for n in names if _NEMO_SHARD_MANIFEST.match(n))
        covered = {os.path.dirname(os.path.abspath(path)) for path in whole}
        found = whole + [path for path in sharded if _nemo_dataset_dir(path) not in covered]
        if not found:
            raise DataDirError(f"{source}: no NeMo manifest there ({_NEMO_MANIFEST} or "
                               "manifest_<N>.json)")
        files.extend(os.path.abspath(path) for path in found)
    return sorted(set(files))


def _nemo_dataset_dir(manifest: str) -> str:
    """The folder of a manifest's shards: its own, or the one above ``sharded_manifests/``."""
    folder = os.path.dirname(os.path.abspath(manifest))
    if (_NEMO_SHARD_MANIFEST.match(os.path.basename(manifest)) and
            os.path.basename(folder) == _NEMO_SHARD_MANIFEST_DIR):
        return os.path.dirname(folder)
    return folder


def nemo_records(manifests: Iterable[str]) -> Iterator[Record]:
    """The lines of NeMo tarred manifests, in manifest and line order, each a member of its
    ``audio_<N>.tar``. A line with an ``offset``, or one NeMo named ``<stem>-sub<k>`` (a file
    tarred once and read at several offsets), is the part of its member NeMo reads (``offset``,
    ``duration``): a segment, with NeMo's own id for it ``<stem>-<offset cs>-<duration cs>``.
    Members no line names are not imported: a manifest may keep only some of a shard."""
    listings: Dict[str, Dict[str, Tuple[tarfile.TarInfo, int]]] = {}
    for path in manifests:
        sharded = _NEMO_SHARD_MANIFEST.match(os.path.basename(path))
        folder = _nemo_dataset_dir(path)
        for line, entry in _json_lines(path, "NeMo manifest"):
            where = f"NeMo manifest {path}, line {line}"
            name = entry.get("audio_filepath")
            if not name:
                raise DataDirError(f"{where}: no audio_filepath")
            shard = _nemo_shard(entry.get("shard_id"), sharded, where)
            tar_path = os.path.join(folder, f"audio_{shard}.tar")
            if tar_path not in listings:
                if not os.path.isfile(tar_path):
                    raise DataDirError(f"{where}: no shard {shard} ({tar_path} is not there)")
                listings[tar_path] = {member.name: (member, index) for index, member in
                                      enumerate(_tar_files(tar_path, "NeMo tar shard"))}
            repeat = _NEMO_REPEAT.match(name)
            member_name = repeat["stem"] + (repeat["ext"] or "") if repeat else name
            if member_name not in listings[tar_path]:
                repeats = f" (the file '{name}' repeats)" if repeat else ""
                raise DataDirError(f"{where}: '{member_name}'{repeats} is not a member of "
                                   f"{tar_path}")
            member, index = listings[tar_path][member_name]
            yield _nemo_record(entry, name, member, tar_entry(tar_path, member, index),
                               repeat is not None, shard, where)


def _nemo_shard(shard_id, sharded: Optional[re.Match], where: str) -> int:
    try:
        shard = None if shard_id is None else int(shard_id)
    except (TypeError, ValueError) as exc:
        raise DataDirError(f"{where}: shard_id {shard_id!r} is not a number") from exc
    if sharded is None:
        if shard is None:
            raise DataDirError(f"{where}: no shard_id (a manifest over all shards names each "
                               "line's; one per shard is named manifest_<N>.json)")
        return shard
    if shard is not None and shard != int(sharded["shard"]):
        raise DataDirError(f"{where}: shard_id {shard} in the manifest of shard "
                           f"{sharded['shard']}")
    return int(sharded["shard"])


def _nemo_record(line: dict, name: str, member: tarfile.TarInfo, wav_entry: str, repeat: bool,
                 shard: int, where: str) -> Record:
    origin = f"{where} (member {member.name} of shard {shard})"
    speaker = _field(line, "speaker")
    try:
        duration = None if line.get("duration") is None else float(line["duration"])
        offset = None if line.get("offset") is None else float(line["offset"])
    except (TypeError, ValueError) as exc:
        raise DataDirError(f"{where}: duration or offset is not a number: {exc}") from exc
    fields = {"text": _field(line, "text"), "duration": duration,
              "speaker": None if speaker is None else str(speaker)}
    if offset is None and not repeat:
        return Record(posixpath.splitext(name)[0], wav_entry, origin, **fields)
    if duration is None:
        raise DataDirError(f"{where}: a part of member {member.name} (offset {offset or 0}) "
                           "without its duration")
    start = offset or 0.0
    stem = posixpath.splitext(member.name)[0]
    return Record(f"{stem}-{round(start * 100):06d}-{round(duration * 100):06d}", wav_entry,
                  origin, recording=f"{stem}-audio_{shard}", start=start, end=start + duration,
                  **fields)


def _suffixed(*suffixes: str) -> Callable[[Sequence[str]], List[str]]:
    return lambda sources: expand_sources(sources, suffixes)


# Each format: how its records are read, and the files of its sources.
FORMATS: Dict[str, Tuple[Callable[[Iterable[str]], Iterator[Record]],
                         Callable[[Sequence[str]], List[str]]]] = {
    "webdataset": (webdataset_records, _suffixed(*TAR_SUFFIXES)),
    "hf": (hf_records, hf_files),
    "lhotse": (lhotse_records, _suffixed(".jsonl", ".jsonl.gz")),
    "shar": (shar_records, shar_cuts_files),
    "nemo": (nemo_records, nemo_manifests),
}


def import_corpus(kind: str, sources: Sequence[str], data_dir: str) -> Dict[str, int]:
    """Writes the data dir of the corpus at ``sources`` in format ``kind``; returns counts."""
    read, find = FORMATS[kind]
    return write_data_dir(read(find(sources)), data_dir)


def _write_recordings(by_id: Dict[str, Record], ids: List[str], data_dir: str) -> None:
    """wav.scp over the recordings and ``segments`` over them, for records that are segments."""
    recordings: Dict[str, Record] = {}
    for u in ids:
        record = by_id[u]
        reco = kaldi_id(record.recording or record.key)
        if reco in recordings and recordings[reco].entry != record.entry:
            raise DataDirError(f"recording '{reco}' has two sources: {recordings[reco].entry} "
                               f"({recordings[reco].origin}) and {record.entry} "
                               f"({record.origin})")
        recordings.setdefault(reco, record)
    write_table(os.path.join(data_dir, "wav.scp"),
                ((r, recordings[r].entry) for r in sorted(recordings, key=str.encode)))
    write_table(os.path.join(data_dir, "segments"),
                ((u, f"{kaldi_id(by_id[u].recording or by_id[u].key)} "
                     f"{_seconds(by_id[u].start)} {_seconds(by_id[u].end)}") for u in ids))


def _seconds(value: Optional[float]) -> str:
    """Seconds to the microsecond (no sample moves at any rate below 1 MHz); -1: the end."""
    if value is None:
        return "-1"
    return f"{value:.6f}".rstrip("0").rstrip(".")


def write_data_dir(records: Iterable[Record], data_dir: str) -> Dict[str, int]:
    by_id: Dict[str, Record] = {}
    for record in records:
        utt = kaldi_id(record.key)
        if not utt:
            raise DataDirError(f"{record.origin}: key '{record.key}' has no character a Kaldi "
                               "id can hold (letters, digits, . _ -)")
        if utt in by_id:
            raise DataDirError(f"two utterances would get the id '{utt}': '{by_id[utt].key}' "
                               f"({by_id[utt].origin}) and '{record.key}' ({record.origin})")
        by_id[utt] = record
    if not by_id:
        raise DataDirError("the sources hold no utterance")
    os.makedirs(data_dir, exist_ok=True)
    ids = sorted(by_id, key=lambda u: u.encode("utf-8"))  # LC_ALL=C order
    speaker = {u: kaldi_id(by_id[u].speaker) if by_id[u].speaker else u for u in ids}
    if any(by_id[u].recording is not None for u in ids):
        _write_recordings(by_id, ids, data_dir)
    else:
        write_table(os.path.join(data_dir, "wav.scp"), ((u, by_id[u].entry) for u in ids))
    write_table(os.path.join(data_dir, "utt2spk"), ((u, speaker[u]) for u in ids))
    spk2utt: Dict[str, List[str]] = {}
    for u in ids:
        spk2utt.setdefault(speaker[u], []).append(u)
    write_table(os.path.join(data_dir, "spk2utt"),
                ((s, " ".join(spk2utt[s])) for s in sorted(spk2utt, key=str.encode)))
    texts = [u for u in ids if by_id[u].text is not None]
    if texts:
        write_table(os.path.join(data_dir, "text"),
                    ((u, " ".join(by_id[u].text.split())) for u in texts))
    durations = all(by_id[u].duration is not None for u in ids)
    if durations:
        write_table(os.path.join(data_dir, "utt2dur"),
                    ((u, f"{by_id[u].duration:.3f}") for u in ids))
    return {"utterances": len(ids), "speakers": len(spk2utt), "texts": len(texts),
            "durations": len(ids) if durations else 0}
