"""Corpora as they ship, made Kaldi data dirs without copying audio: each utterance's
``wav.scp`` entry points into its shard (``speechdump.containers``).

Formats:

- ``webdataset``: tar shards (``.tar``, or compressed: ``.tar.gz``, ``.tgz``, ...) whose members
  ``<key>.<ext>`` group by key (the member's path up to the first dot of its file name, as
  WebDataset groups them): one audio member (``.flac``, ``.wav``, ``.mp3``, ``.ogg``, ``.opus``)
  and optionally ``.json`` (text, speaker, duration) and ``.txt`` (text).
- ``hf``: parquet files as Hugging Face datasets writes them: an ``audio`` column (a struct of
  ``bytes`` and ``path``) and optionally an id, text and speaker column (see ``FIELDS``).
- ``lhotse``: Lhotse cut manifests over recordings on disk (LibriHeavy's layout): ``wav.scp``
  over the recordings and ``segments`` for the cuts.

Each source gives ``Record``s; ``write_data_dir`` makes their keys Kaldi-safe ids, refuses two
keys that would become one id (naming both), and writes ``wav.scp`` (and ``segments`` for cuts
of recordings), ``utt2spk`` (the speaker, else the utterance itself), ``spk2utt``, ``text``
(where the source has transcripts) and ``utt2dur`` (where it knows every duration), sorted as
Kaldi sorts (``LC_ALL=C``).
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import tarfile
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from speechdump.containers import COMPRESSED_TAR, parquet_entry, tar_entry
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
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, name = posixpath.split(member.name)
                    stem, _, ext = name.partition(".")
                    parts = groups.setdefault(posixpath.join(folder, stem), {})
                    ext = ext.lower()
                    if ext in ("json", "txt"):
                        parts[ext] = tar.extractfile(member).read().decode("utf-8")
                    else:
                        parts[ext] = member
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
            yield Record(key, tar_entry(path, audio), f"tar shard {path}, member {audio.name}",
                         text=text, speaker=None if speaker is None else str(speaker),
                         duration=None if duration is None else float(duration))


def hf_records(files: Iterable[str]) -> Iterator[Record]:
    """The rows of Hugging Face datasets parquet files, in file, row group and row order. Only
    the id, text and speaker columns (and the audio path) are read here, never the audio."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except OSError as exc:
            raise DataDirError(f"parquet file {path}: {exc}") from exc
        names = parquet.schema_arrow.names
        if "audio" not in names:
            raise DataDirError(f"parquet file {path} has no audio column (its columns: "
                               f"{', '.join(names)})")
        wanted = {field: next((c for c in FIELDS[field] if c in names), None)
                  for field in ("id", "text", "speaker", "duration")}
        columns = [c for c in wanted.values() if c] + ["audio.path"]
        stem = os.path.splitext(os.path.basename(path))[0]
        for group in range(parquet.num_row_groups):
            rows = parquet.read_row_group(group, columns=columns).to_pylist()
            for row, values in enumerate(rows):
                meta = {field: values.get(column) for field, column in wanted.items() if column}
                audio_path = (values.get("audio") or {}).get("path")
                key = (meta.get("id") or
                       (os.path.splitext(os.path.basename(audio_path))[0] if audio_path
                        else f"{stem}-{group}-{row}"))
                yield Record(str(key), parquet_entry(path, group, row),
                             f"parquet file {path}, row group {group}, row {row}",
                             text=meta.get("text"),
                             speaker=None if meta.get("speaker") is None
                             else str(meta["speaker"]),
                             duration=None if meta.get("duration") is None
                             else float(meta["duration"]))


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


FORMATS = {"webdataset": (webdataset_records, (".tar",) + COMPRESSED_TAR),
           "hf": (hf_records, (".parquet",)),
           "lhotse": (lhotse_records, (".jsonl", ".jsonl.gz"))}


def import_corpus(kind: str, sources: Sequence[str], data_dir: str) -> Dict[str, int]:
    """Writes the data dir of the corpus at ``sources`` in format ``kind``; returns counts."""
    read, suffixes = FORMATS[kind]
    return write_data_dir(read(expand_sources(sources, suffixes)), data_dir)


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
