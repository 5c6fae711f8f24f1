"""Stage outputs exported as shards that line up with the corpus's own: Lhotse Shar fields and
parquet files, one output shard per input shard.

A corpus read where it lies (``wav.scp`` entries into tar shards, parquet or Arrow files, see
``speechdump.containers``) is trained on shard by shard; its features, embeddings and tokens
are most useful cut the same way, so that output shard ``k`` holds exactly the utterances of
input shard ``k``, in the order they lie in it (``containers.place``, then the segment start).
An output shard takes its input shard's index where the input names carry one (the run of
digits that tells them apart: ``recording.000003.tar`` -> ``feats.000003.tar``); otherwise the
shards are numbered from 0 in the order of their paths. A data dir of plain files (no shards)
is cut into shards of ``shard_size`` utterances in its own (id) order. The export's record
(``SHAR_RECORD`` or ``PARQUET_RECORD``) maps every output shard to its input shard.

Exported: the utterances of the data dir (those of its ``text``, else of ``segments`` or
``wav.scp``: the ids a stage writes), every per-utterance stream of each stage output (from its
``meta.json``), arrays copied as kaldiio reads them from the arks (compressed matrices
decompressed), integer streams kept integers. An utterance missing from a stream, or a stream
holding one the data dir does not, is refused, naming both.

Lhotse Shar (``export_shar``): ``cuts.NNNNNN.jsonl.gz`` (cuts with the data dir's ids, start 0,
a supervision with text and speaker) and one ``<field>.NNNNNN.tar`` per stream, written by
Lhotse's own ``JsonlShardWriter`` and ``ArrayTarWriter`` (numpy arrays, not lilcom): vectors
are ``Array`` fields, frame-level streams ``TemporalArray`` fields with the stream's frame
shift, and the stream named by ``features`` becomes the cut's ``features`` (Lhotse's field of
that name). A cut's duration is the audio's unless Lhotse would then return fewer or more frames
than are stored (``speechdump.lhotse_export``), so that ``CutSet.from_shar(fields=...)`` returns
every array as stored. Cuts carry no recording: the audio stays in the input shards.

Parquet (``export_parquet``): ``shard.NNNNNN.parquet`` with a column ``id`` and one column per
stream, named as its scp stem: a vector is ``list<float>`` (or ``list<int32>``), a frame-level
stream ``list<list<...>>`` (one inner list per frame), a one-codebook token stream
``list<int32>``: plain nested lists, which pyarrow and Hugging Face ``datasets`` read without
a schema of their own (no fixed-size lists or extension types). Row groups hold about
``ROW_GROUP_BYTES`` of arrays. Each file's schema metadata, key ``METADATA_KEY``, holds its
input shard and the fields' stage configs.

Both carry each stream's config fingerprint (``speechdump.shards.config_fingerprint`` of its
stage's ``meta.json`` config): the record names it per field. Exporting into a directory that
holds an export whose fields of the same names came from other configs is refused, naming the
record, as is overwriting files no export record accounts for; ``force`` replaces them. An
export replaces the one before it in its directory (the files its record lists). Files are
written in a staging directory and moved into place, the record last: a directory whose record
is missing holds no finished export.

The Shar record is named ``cuts.*.json`` because ``CutSet.from_shar(in_dir=...)`` takes every
other file name's first part as a field; a ``cuts.`` file that is not JSONL it passes over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechdump import containers
from speechdump.data import atomic_path, read_segments, read_table
from speechdump.errors import SpeechdumpError
from speechdump.extractors.base import FLOAT, Stream
from speechdump.job import MERGED_RECORD
from speechdump.kaldi_io import load_entry, read_scp_table, writing
from speechdump.shards import config_fingerprint, stage_record

SHAR, PARQUET = "shar", "parquet"
FORMAT = "speechdump-shard-export"
VERSION = 1
SHAR_RECORD = "cuts.speechdump.json"
PARQUET_RECORD = "speechdump.json"
PARQUET_STEM = "shard"
METADATA_KEY = b"speechdump"
FEATURES_FIELD = "features"  # Lhotse's own field: cut.load_features()
ROW_GROUP_BYTES = 64 << 20
STAGING = ".speechdump-export.partial"
_DIGITS = re.compile(r"\d+")
_CONTAINER_SUFFIXES = (*containers.COMPRESSED_TAR, ".tar", ".parquet", ".arrow")


class ShardExportError(SpeechdumpError, ValueError):
    """The data dir or a stage output cannot be exported as aligned shards, or the export would
    overwrite another; names the file (and the utterance)."""


@dataclass
class StageStream:
    """One per-utterance stream of a stage output."""

    stem: str
    scp: str
    stream: Stream
    table: Dict[str, str]  # utterance -> ark location
    stage: str  # the stage's output directory
    tag: str
    config: dict

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.config)

    def describe(self) -> dict:
        """What the export record says about this stream."""
        return {"stem": self.stem, "stage": os.path.abspath(self.stage), "tag": self.tag,
                "stream": self.stream.to_record(), "fingerprint": self.fingerprint,
                "config": self.config}


@dataclass
class OutputShard:
    """The utterances of one output shard, in order, and the input shard they lie in."""

    index: int
    input: Optional[str]  # None: a data dir of plain files, cut every shard_size utterances
    utterances: List[str]
    files: List[str] = field(default_factory=list)


def stage_streams(out_dir: str) -> List[StageStream]:
    """The streams of the stage output ``out_dir``, from its meta.json, in its order."""
    meta = os.path.join(out_dir, MERGED_RECORD)
    record = stage_record(meta)
    if not record.get("streams") or not isinstance(record.get("config"), dict):
        raise ShardExportError(f"{meta}: missing, or without streams and config (is {out_dir} "
                               f"a finished stage output?)")
    streams = []
    for entry in record["streams"]:
        stem = entry["stem"]
        stream = Stream.from_record({k: v for k, v in entry.items() if k != "stem"})
        scp = os.path.join(out_dir, f"{stem}.scp")
        streams.append(StageStream(stem, scp, stream, read_scp_table(scp), out_dir,
                                   record.get("tag", stem), record["config"]))
    return streams


@dataclass(frozen=True)
class Audio:
    """Where an utterance's audio is: its wav.scp entry, recording and start in it."""

    entry: str
    recording: str
    start: float = 0.0


# ----------------------------------------------------------------------------- alignment

def data_dir_utterances(data_dir: str) -> Dict[str, Audio]:
    """The utterances a stage writes, in order, and their audio: those of ``text`` where
    there is one, else of ``segments`` or ``wav.scp``."""
    wav_path = os.path.join(data_dir, "wav.scp")
    seg_path = os.path.join(data_dir, "segments")
    wav = read_table(wav_path)
    if os.path.exists(seg_path):
        audio = {}
        for utt, (reco, start, _) in read_segments(seg_path).items():
            if reco not in wav:
                raise ShardExportError(f"{seg_path}: recording '{reco}' of '{utt}' is not in "
                                       f"{wav_path}")
            audio[utt] = Audio(wav[reco], reco, start)
    else:
        audio = {utt: Audio(entry, utt) for utt, entry in wav.items()}
    text_path = os.path.join(data_dir, "text")
    if not os.path.exists(text_path):
        return audio
    ids = list(read_table(text_path))
    lost = [utt for utt in ids if utt not in audio]
    if lost:
        raise ShardExportError(f"{text_path}: {len(lost)} ids have no audio in "
                               f"{seg_path if os.path.exists(seg_path) else wav_path}: "
                               f"{', '.join(lost[:5])}")
    return {utt: audio[utt] for utt in ids}


def reference_file(data_dir: str) -> str:
    """The data dir file whose ids the stages write (for messages)."""
    for name in ("text", "segments"):
        if os.path.exists(os.path.join(data_dir, name)):
            return os.path.join(data_dir, name)
    return os.path.join(data_dir, "wav.scp")


def shard_indices(paths: Sequence[str]) -> Optional[List[int]]:
    """The index each input shard's file name carries: the one run of digits that differs
    between the names (the only run, for a single shard), the names being alike otherwise;
    None where the names do not tell (no digits, several runs differ, two equal numbers)."""
    names = [os.path.basename(p) for p in paths]
    names = [next((n[:-len(s)] for s in _CONTAINER_SUFFIXES if n.endswith(s)), n) for n in names]
    if len({_DIGITS.sub("#", n) for n in names}) != 1:
        return None
    runs = [_DIGITS.findall(n) for n in names]
    if len(runs[0]) == 1:
        position = 0
    else:
        varying = [k for k in range(len(runs[0])) if len({r[k] for r in runs}) > 1]
        if len(varying) != 1:
            return None
        position = varying[0]
    indices = [int(r[position]) for r in runs]
    return indices if len(set(indices)) == len(indices) else None


def output_shards(data_dir: str, utterances: Dict[str, Audio],
                  shard_size: int) -> List[OutputShard]:
    """The utterances grouped by the shard their audio lies in, each group in reading order;
    for plain files, groups of ``shard_size`` in the data dir's order."""
    wav_path = os.path.join(data_dir, "wav.scp")
    placed: Dict[str, list] = {}
    plain: List[str] = []
    for utt, audio in utterances.items():
        try:
            where = containers.parse(audio.entry)
        except ValueError as exc:
            raise ShardExportError(f"{wav_path}: recording '{audio.recording}' of utterance "
                                   f"'{utt}': {exc}") from None
        if where is None:
            plain.append(utt)
        else:
            placed.setdefault(where.path, []).append((containers.place(where), audio.start, utt))
    if placed and plain:
        shard = next(iter(placed))
        raise ShardExportError(f"{wav_path}: utterance '{plain[0]}' is read from a plain entry, "
                               f"'{placed[shard][0][2]}' from the shard {shard}: outputs follow "
                               f"the input shards only where every utterance lies in one")
    if plain:
        if shard_size < 1:
            raise ShardExportError(f"shard size must be positive, got {shard_size}")
        return [OutputShard(n, None, plain[i:i + shard_size])
                for n, i in enumerate(range(0, len(plain), shard_size))]
    paths = sorted(placed)
    indices = shard_indices(paths) or list(range(len(paths)))
    return [OutputShard(index, path, [utt for *_, utt in sorted(placed[path])])
            for index, path in zip(indices, paths)]


def check_streams(streams: Sequence[StageStream], utterances: Dict[str, Audio],
                  data_dir: str) -> None:
    """Every stream holds exactly the data dir's utterances; else the ids, named, and why."""
    reference = reference_file(data_dir)
    names = [s.stem for s in streams]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ShardExportError(f"two stage outputs hold streams named {', '.join(twice)} "
                               f"({', '.join(sorted({s.stage for s in streams}))})")
    for s in streams:
        missing = [utt for utt in utterances if utt not in s.table]
        if missing:
            bad_path = os.path.join(s.stage, "bad_utts")
            bad = read_table(bad_path) if os.path.exists(bad_path) else {}
            why = (f" (listed in {bad_path}: {bad[missing[0]]}; drop it from the data dir to "
                   f"export the rest)" if missing[0] in bad else "")
            raise ShardExportError(f"utterance '{missing[0]}' of {reference} is not in {s.scp}"
                                   f"{why}; {len(missing)} missing: {', '.join(missing[:5])}")
        extra = [utt for utt in s.table if utt not in utterances]
        if extra:
            raise ShardExportError(f"{s.scp} holds {len(extra)} utterances that are not in "
                                   f"{reference}: {', '.join(extra[:5])} (an output of another "
                                   f"data dir?)")


def _prepare(data_dir: str, stage_dirs: Sequence[str], shard_size: int):
    if not stage_dirs:
        raise ShardExportError("no stage output to export")
    utterances = data_dir_utterances(data_dir)
    if not utterances:
        raise ShardExportError(f"{reference_file(data_dir)}: no utterances")
    streams = [s for out_dir in stage_dirs for s in stage_streams(out_dir)]
    check_streams(streams, utterances, data_dir)
    return utterances, streams, output_shards(data_dir, utterances, shard_size)


def _load(s: StageStream, utt: str) -> np.ndarray:
    array = np.asarray(load_entry(s.table[utt], utt, s.scp))
    if array.ndim not in (1, 2):
        raise ShardExportError(f"{s.scp}: utterance '{utt}' is an array of shape "
                               f"{list(array.shape)}: vectors and matrices are exported")
    return array


# ----------------------------------------------------------------------------- the record

def _read_record(path: str) -> Optional[dict]:
    """The export record at ``path``; None where there is none; ShardExportError where the
    file there is not one."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        raise ShardExportError(f"{path}: not a readable export record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ShardExportError(f"{path}: not a {FORMAT} record")
    return record


def _previous_files(out_dir: str, record_name: str, fields: Dict[str, dict],
                    planned: Sequence[str], force: bool) -> List[str]:
    """The files of the export already in ``out_dir``, to be replaced. Unless ``force``,
    refuses an export whose fields of the same names came from other configs, and files in the
    way that no export record accounts for."""
    record_path = os.path.join(out_dir, record_name)
    try:
        previous = _read_record(record_path) or {}
    except ShardExportError as exc:
        if not force:
            raise ShardExportError(f"{exc}: not overwritten (--force true replaces it)") from None
        previous = {}
    # Plain names only: the record is read back from disk, and only files beside it are ours.
    owned = {name for shard in previous.get("shards", []) for name in shard.get("files", [])
             if name == os.path.basename(name) and name not in ("", ".", "..")}
    if force:
        return sorted(owned)
    for name, now in fields.items():
        before = previous.get("fields", {}).get(name)
        if before and before.get("fingerprint") != now["fingerprint"]:
            raise ShardExportError(
                f"{record_path}: field '{name}' there was exported from {before.get('stage')} "
                f"(config {str(before.get('fingerprint'))[:12]}), {now['stage']} has another "
                f"config ({now['fingerprint'][:12]}): exports of two configs are not mixed "
                f"(export to another directory, or --force true to replace it)")
    foreign = [name for name in planned
               if name not in owned and os.path.exists(os.path.join(out_dir, name))]
    if foreign:
        why = (f"{record_path} does not list it" if previous
               else f"no export record ({record_path}) accounts for it")
        raise ShardExportError(f"{os.path.join(out_dir, foreign[0])} exists and {why}: not "
                               f"overwritten (--force true replaces it)")
    return sorted(owned)


def _staging(out_dir: str) -> str:
    staging = os.path.join(out_dir, STAGING)
    with writing(staging):
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    return staging


def _publish(out_dir: str, staging: str, record_name: str, record: dict,
             replaced: Sequence[str]) -> None:
    """Moves the staged files into ``out_dir`` in place of the previous export's, then writes
    the record (last: without it the directory holds no finished export)."""
    record_path = os.path.join(out_dir, record_name)
    for name in (record_name, *replaced):
        path = os.path.join(out_dir, name)
        with writing(path):
            if os.path.exists(path):
                os.remove(path)
    for shard in record["shards"]:
        for name in shard["files"]:
            with writing(os.path.join(out_dir, name)):
                os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    shutil.rmtree(staging, ignore_errors=True)
    with writing(record_path), atomic_path(record_path) as tmp, \
            open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def _write_export(kind: str, data_dir: str, out_dir: str, fields: Dict[str, dict],
                  shards: List[OutputShard], shard_size: int, force: bool,
                  write_shard: Callable[[str, OutputShard], None]) -> dict:
    """Checks what is in ``out_dir``, writes every shard (``write_shard(staging, shard)``
    writes ``shard.files`` into ``staging``), publishes them and the record; returns it."""
    record_name = SHAR_RECORD if kind == SHAR else PARQUET_RECORD
    with writing(out_dir):
        os.makedirs(out_dir, exist_ok=True)
    replaced = _previous_files(out_dir, record_name, fields,
                               [name for shard in shards for name in shard.files], force)
    staging = _staging(out_dir)
    try:
        for shard in shards:
            write_shard(staging, shard)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aligned = shards[0].input is not None
    record = {"format": FORMAT, "version": VERSION, "kind": kind,
              "data_dir": os.path.abspath(data_dir),
              "aligned": "input shards" if aligned else f"every {shard_size} utterances",
              "utterances": sum(len(s.utterances) for s in shards), "fields": fields,
              "shards": [{"index": s.index, "input": s.input, "utterances": len(s.utterances),
                          "first": s.utterances[0], "last": s.utterances[-1], "files": s.files}
                         for s in shards]}
    _publish(out_dir, staging, record_name, record, replaced)
    return record


def read_record(out_dir: str, kind: str) -> dict:
    """The record of the ``kind`` export in ``out_dir``; ShardExportError naming it where
    there is none."""
    path = os.path.join(out_dir, SHAR_RECORD if kind == SHAR else PARQUET_RECORD)
    record = _read_record(path)
    if record is None or record.get("kind") != kind:
        raise ShardExportError(f"{path}: no {kind} export record there")
    return record


# ----------------------------------------------------------------------------- Lhotse Shar

def audio_durations(data_dir: str, utterances: Dict[str, Audio],
                    stage_dirs: Sequence[str]) -> Dict[str, float]:
    """Each utterance's audio duration: its segment's, else from ``utt2dur`` of the data dir,
    else of a stage output (stages that read audio write one)."""
    durations: Dict[str, float] = {}
    seg_path = os.path.join(data_dir, "segments")
    if os.path.exists(seg_path):
        for utt, (_, start, end) in read_segments(seg_path).items():
            if end != -1:
                durations[utt] = round(end - start, 6)
    sources = [os.path.join(d, "utt2dur") for d in (data_dir, *stage_dirs)]
    for path in sources:
        if os.path.exists(path) and any(utt not in durations for utt in utterances):
            for utt, value in read_table(path).items():
                try:
                    durations.setdefault(utt, float(value))
                except ValueError:
                    raise ShardExportError(f"{path}: the duration of '{utt}' is '{value}', not a "
                                           f"number of seconds") from None
    unknown = [utt for utt in utterances if utt not in durations]
    if unknown:
        raise ShardExportError(f"utterance '{unknown[0]}': no duration in "
                               f"{', '.join(sources)} ({len(unknown)} without one); "
                               f"pyscripts/get_utt2dur.py {data_dir} writes {sources[0]}")
    return durations


def shar_field_names(streams: Sequence[StageStream], features: Optional[str]) -> Dict[str, str]:
    """stem -> Shar field: the stem, and ``FEATURES_FIELD`` for the stream named by
    ``features``. Lhotse sets a field as the cut's attribute of its name, so a stream named
    ``features`` is only exported as the cuts' features."""
    names = {s.stem: s.stem for s in streams}
    if features is not None:
        chosen = next((s for s in streams if s.stem == features), None)
        if chosen is None or chosen.stream.kind != FLOAT or not chosen.stream.frame_level:
            raise ShardExportError(f"--features {features}: not a frame-level float stream of "
                                   f"{', '.join(sorted({s.stage for s in streams}))} (there: "
                                   f"{', '.join(names)})")
        names[features] = FEATURES_FIELD
    clash = next((s for s in streams if s.stem == FEATURES_FIELD and s.stem != features), None)
    if clash is not None:
        raise ShardExportError(f"{clash.scp}: Lhotse reads a Shar field named "
                               f"'{FEATURES_FIELD}' as the cuts' features: export it as the "
                               f"features (--features {FEATURES_FIELD}) or rename the stream")
    return names


class _SharShards:
    """Writes Shar shards: per utterance, every stream's array into its field's tar (Lhotse's
    ``ArrayTarWriter``, as npy) and the cut into the cuts' JSONL (``JsonlShardWriter``)."""

    def __init__(self, streams: Sequence[StageStream], field_names: Dict[str, str],
                 features: Optional[str], utterances: Dict[str, Audio],
                 durations: Dict[str, float], data_dir: str):
        self.streams, self.field_names, self.features = streams, field_names, features
        self.utterances, self.durations = utterances, durations
        self.text = _optional_table(data_dir, "text")
        self.utt2spk = _optional_table(data_dir, "utt2spk")

    def files(self, index: int) -> List[str]:
        return [f"cuts.{index:06d}.jsonl.gz",
                *(f"{self.field_names[s.stem]}.{index:06d}.tar" for s in self.streams)]

    def write(self, staging: str, shard: OutputShard) -> None:
        from lhotse.shar.writers import ArrayTarWriter, JsonlShardWriter

        pattern_dir = staging.replace("%", "%%")  # Lhotse's writers number shards with %
        count = len(shard.utterances)
        cuts_path = os.path.join(staging, shard.files[0])
        cuts = JsonlShardWriter(f"{pattern_dir}/cuts.%06d.jsonl.gz", shard_size=count,
                                shard_offset=shard.index)
        tars = {s.stem: (os.path.join(staging, name), ArrayTarWriter(
            f"{pattern_dir}/{self.field_names[s.stem]}.%06d.tar", shard_size=count,
            compression="numpy", shard_offset=shard.index))
            for s, name in zip(self.streams, shard.files[1:])}
        try:
            for utt in shard.utterances:
                arrays = {s.stem: _load(s, utt) for s in self.streams}
                cut, manifests = self.cut(utt, arrays)
                for stem, (path, writer) in tars.items():
                    with writing(path):
                        writer.write(utt, arrays[stem], manifests[stem])
                with writing(cuts_path):
                    cuts.write(cut)
        finally:
            for path, writer in tars.values():
                with writing(path):
                    writer.close()
            with writing(cuts_path):
                cuts.close()

    def cut(self, utt: str, arrays: Dict[str, np.ndarray]):
        """The cut of ``utt`` (its fields as Shar placeholders) and the manifest of each
        stream's array."""
        from lhotse import Features, MonoCut, SupervisionSegment
        from lhotse.array import Array, TemporalArray
        from lhotse.shar.utils import to_shar_placeholder

        from speechdump.lhotse_export import FEATURE_RATE, cut_duration

        temporal = [(arrays[s.stem].shape[0], s.stream.frame_shift, s.stem == self.features)
                    for s in self.streams if s.stream.frame_level]
        try:
            duration = cut_duration(utt, self.durations[utt], temporal)
        except SpeechdumpError as exc:
            stages = ", ".join(sorted({s.stage for s in self.streams}))
            raise ShardExportError(f"{exc} ({stages})") from None
        audio = self.utterances[utt]
        manifests, custom, cut_features = {}, {}, None
        for s in self.streams:
            array = arrays[s.stem]
            if s.stem == self.features:
                manifest = Features(type=s.stem, num_frames=array.shape[0],
                                    num_features=array.shape[1],
                                    frame_shift=s.stream.frame_shift,
                                    sampling_rate=FEATURE_RATE, start=0.0, duration=duration,
                                    storage_type="shar", storage_path="", storage_key="",
                                    recording_id=audio.recording, channels=0)
                cut_features = to_shar_placeholder(manifest)
            else:
                manifest = Array(storage_type="shar", storage_path="", storage_key="",
                                 shape=list(array.shape))
                if s.stream.frame_level:
                    manifest = TemporalArray(array=manifest, temporal_dim=0,
                                             frame_shift=s.stream.frame_shift, start=0.0)
                custom[s.stem] = to_shar_placeholder(manifest)
            manifests[s.stem] = manifest
        supervision = SupervisionSegment(id=utt, recording_id=audio.recording, start=0.0,
                                         duration=self.durations[utt], channel=0,
                                         text=self.text.get(utt), speaker=self.utt2spk.get(utt))
        cut = MonoCut(id=utt, start=0.0, duration=duration, channel=0,
                      supervisions=[supervision], features=cut_features, custom=custom or None)
        return cut, manifests


def export_shar(data_dir: str, out_dir: str, stage_dirs: Sequence[str],
                shard_size: int = 1000, features: Optional[str] = None,
                force: bool = False) -> dict:
    """Writes the Lhotse Shar export of the stage outputs ``stage_dirs`` over ``data_dir``
    into ``out_dir`` (see the module doc); returns the record written there. ``features``:
    the scp stem of a frame-level float stream to store as the cuts' ``features``."""
    try:
        import lhotse.shar  # noqa: F401
    except ImportError as exc:
        raise ShardExportError(f"the Shar export needs lhotse (pip install "
                               f"'speechdump[lhotse]'): {exc}") from exc
    utterances, streams, shards = _prepare(data_dir, stage_dirs, shard_size)
    for s in streams:
        if s.stream.frame_level and not s.stream.frame_shift:
            raise ShardExportError(f"{s.scp}: its frame shift is unknown ({s.stage}/"
                                   f"{MERGED_RECORD}); Lhotse's temporal arrays need it")
    field_names = shar_field_names(streams, features)
    writer = _SharShards(streams, field_names, features, utterances,
                         audio_durations(data_dir, utterances, stage_dirs), data_dir)
    for shard in shards:
        shard.files = writer.files(shard.index)
    fields = {field_names[s.stem]: s.describe() for s in streams}
    return _write_export(SHAR, data_dir, out_dir, fields, shards, shard_size, force,
                         writer.write)


def shar_fields(out_dir: str) -> Dict[str, List[str]]:
    """``fields`` for ``CutSet.from_shar`` over the Shar export in ``out_dir``, from its
    record: the cuts and every field, shard by shard."""
    record = read_record(out_dir, SHAR)
    names = ["cuts", *record["fields"]]
    return {name: [os.path.join(out_dir, shard["files"][k]) for shard in record["shards"]]
            for k, name in enumerate(names)}


def _optional_table(data_dir: str, name: str) -> Dict[str, str]:
    path = os.path.join(data_dir, name)
    return read_table(path) if os.path.exists(path) else {}


# ----------------------------------------------------------------------------- parquet

def export_parquet(data_dir: str, out_dir: str, stage_dirs: Sequence[str],
                   shard_size: int = 1000, force: bool = False) -> dict:
    """Writes the parquet export of the stage outputs ``stage_dirs`` over ``data_dir`` into
    ``out_dir`` (see the module doc); returns the record written there."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise ShardExportError(f"the parquet export needs pyarrow (pip install "
                               f"'speechdump[shards]'): {exc}") from exc
    utterances, streams, shards = _prepare(data_dir, stage_dirs, shard_size)
    if "id" in {s.stem for s in streams}:
        raise ShardExportError(f"a stream of {', '.join(stage_dirs)} is named 'id', the name of "
                               f"the utterance id column")
    fields = {s.stem: s.describe() for s in streams}
    for shard in shards:
        shard.files = [f"{PARQUET_STEM}.{shard.index:06d}.parquet"]

    def write_shard(staging: str, shard: OutputShard) -> None:
        path = os.path.join(staging, shard.files[0])
        metadata = json.dumps({"format": FORMAT, "version": VERSION, "index": shard.index,
                               "input": shard.input, "fields": fields})
        _write_parquet(path, shard, streams, metadata)

    return _write_export(PARQUET, data_dir, out_dir, fields, shards, shard_size, force,
                         write_shard)


def _write_parquet(path: str, shard: OutputShard, streams: Sequence[StageStream],
                   metadata: str) -> None:
    """One parquet file: the shard's utterances in order, in row groups of about
    ``ROW_GROUP_BYTES``; each column's type is set by its first array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: Dict[str, Tuple[np.dtype, int]] = {}
    writer = schema = None
    pending: Dict[str, list] = {"id": [], **{s.stem: [] for s in streams}}
    pending_bytes = 0
    try:
        for utt in shard.utterances:
            for s in streams:
                array = _load(s, utt)
                kind = types.setdefault(s.stem, (array.dtype, array.ndim))
                if kind != (array.dtype, array.ndim):
                    raise ShardExportError(
                        f"{s.scp}: utterance '{utt}' is a {array.ndim}-d {array.dtype} array, "
                        f"'{shard.utterances[0]}' a {kind[1]}-d {kind[0]} one: a parquet "
                        f"column has one type")
                pending[s.stem].append(array)
                pending_bytes += array.nbytes
            pending["id"].append(utt)
            if writer is None:
                schema = pa.schema(
                    [pa.field("id", pa.string(), nullable=False)]
                    + [pa.field(s.stem, _list_type(*types[s.stem]), nullable=False)
                       for s in streams],
                    metadata={METADATA_KEY: metadata.encode("utf-8")})
                with writing(path):
                    writer = pq.ParquetWriter(path, schema)
            if pending_bytes >= ROW_GROUP_BYTES or utt == shard.utterances[-1]:
                with writing(path):
                    writer.write_table(_row_group(schema, pending, streams, types))
                pending = {name: [] for name in pending}
                pending_bytes = 0
    finally:
        if writer is not None:
            with writing(path):
                writer.close()


def _list_type(dtype: np.dtype, ndim: int):
    import pyarrow as pa

    value = pa.from_numpy_dtype(dtype)
    return pa.list_(value) if ndim == 1 else pa.list_(pa.list_(value))


def _row_group(schema, pending: Dict[str, list], streams: Sequence[StageStream],
               types: Dict[str, Tuple[np.dtype, int]]):
    import pyarrow as pa

    columns = [pa.array(pending["id"], pa.string())]
    for s in streams:
        arrays = pending[s.stem]
        dtype, ndim = types[s.stem]
        values = pa.array(np.concatenate([a.reshape(-1) for a in arrays]),
                          pa.from_numpy_dtype(dtype))
        if ndim == 2:  # one inner list per frame, of the matrix's width
            widths = np.concatenate([np.full(a.shape[0], a.shape[1], np.int64) for a in arrays])
            values = pa.ListArray.from_arrays(_offsets(widths), values)
        lengths = np.asarray([a.shape[0] for a in arrays], np.int64)
        columns.append(pa.ListArray.from_arrays(_offsets(lengths), values))
    return pa.Table.from_arrays(columns, schema=schema)


def _offsets(lengths: np.ndarray):
    import pyarrow as pa

    ends = np.cumsum(lengths)
    if ends.size and ends[-1] > np.iinfo(np.int32).max:
        raise ShardExportError(f"a row group of {ends[-1]} values: more than a parquet list "
                               f"holds (ROW_GROUP_BYTES is too large)")
    return pa.array(np.concatenate([[0], ends]).astype(np.int32), pa.int32())


def export(kind: str, data_dir: str, out_dir: str, stage_dirs: Sequence[str],
           shard_size: int = 1000, features: Optional[str] = None, force: bool = False) -> dict:
    """``export_shar`` or ``export_parquet``, by ``kind``."""
    if kind == SHAR:
        return export_shar(data_dir, out_dir, stage_dirs, shard_size, features, force)
    if kind == PARQUET:
        if features is not None:
            raise ShardExportError("--features names the stream stored as the Shar cuts' "
                                   "features; parquet has a column per stream")
        return export_parquet(data_dir, out_dir, stage_dirs, shard_size, force)
    raise ShardExportError(f"export format must be {SHAR} or {PARQUET}, not {kind}")
