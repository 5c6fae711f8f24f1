"""Lhotse manifests over speechdump's outputs: recordings, supervisions and cuts whose features
and custom fields point at our arks (no array is copied).

Lhotse (icefall/k2, NeMo's Lhotse loading) describes a corpus as cuts; a cut's ``features``
and its custom ``Array``/``TemporalArray`` fields each name a storage backend (a reader
registered by name), a path and a key. ``export`` maps every stream of the given stage
outputs (from their ``meta.json``) onto that:

* the frame-level float stream chosen as features (the first, unless named) -> ``cut.features``
  through Lhotse's own Kaldi storage (``storage_type`` "kaldiio": ``KaldiReader`` over the
  scp, which reads with ``kaldi_native_io``) where its records are plain float32 matrices;
* every other stream -> a custom field named as its scp stem: utterance vectors (speaker
  embeddings) as ``Array``, tokens and other frame streams as ``TemporalArray`` with the
  stream's frame shift. Lhotse has no reader for Kaldi integer vectors or NPY records, so
  these (and compressed or float16 features) use the reader this module registers,
  ``speechdump_ark`` (path: the ark, key: the byte offset; read with kaldiio). Loading such
  cuts needs ``import speechdump.lhotse_export`` first (registering the reader).

Durations: a cut spans its utterance's audio (the segment, or the recording). Lhotse derives a
frame count from it (``round(duration / frame_shift)``), trims or pads the stored frames to
that, and its collation expects that many; where this count is not the stored one, the cut's
duration becomes the frames' span (frames x frame shift: within a few frames of the audio;
Kaldi fbank without padded edges is 2.5 frames shorter), so that ``load_features``,
``load_custom`` and Lhotse's collation return exactly what the stage stored. The supervision
keeps the audio's duration. Segments become cuts of their recording
with its offset: ``cut.start`` is the segment start.

Per-utterance tables (``tables``: a directory such as scripts/compute_quality.sh's output): each
``utt2<name>`` file there but ``utt2dur`` and ``utt2spk`` (the cut has both already) becomes
the custom field ``<name>`` of every cut, its value a float where it parses as one, else the
text (``cut.snr_db``, ``cut.speech_ratio``, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np

from speechdump.data import read_segments, read_table
from speechdump.errors import SpeechdumpError
from speechdump.extractors.base import FLOAT, VECTOR, Stream
from speechdump.kaldi_io import ark_offset, read_scp_table, record_header
from speechdump.shards import stage_record

try:
    from lhotse.features.io import FeaturesReader, register_reader
except ImportError as exc:  # the optional extra
    raise SpeechdumpError(f"Lhotse export needs lhotse (pip install 'speechdump[lhotse]'): "
                          f"{exc}") from exc

ARK_STORAGE = "speechdump_ark"
KALDI_STORAGE = "kaldiio"  # Lhotse's KaldiReader
FEATURE_RATE = 16000  # the rate extractors read audio at: Lhotse's frame arithmetic uses it


class LhotseExportError(SpeechdumpError, ValueError):
    """The data dir or a stage output cannot be described in Lhotse manifests; names the file."""


@register_reader
class SpeechdumpArkReader(FeaturesReader):
    """Reads the record at byte ``key`` of the Kaldi ark ``storage_path`` with kaldiio: float
    or int vectors and matrices, compressed matrices, NPY records (Lhotse's registry keeps it
    under ``ARK_STORAGE``: registered when this module is imported)."""

    name = ARK_STORAGE

    def __init__(self, storage_path: str, *args, **kwargs):
        super().__init__()
        self.storage_path = storage_path

    def read(self, key: str, left_offset_frames: int = 0,
             right_offset_frames: Optional[int] = None) -> np.ndarray:
        array = np.asarray(kaldiio.load_mat(f"{self.storage_path}:{key}"))
        if array.ndim == 0:
            return array
        return array[left_offset_frames:right_offset_frames]


@dataclass
class Source:
    """One stream of a stage output: its scp table and what it holds."""

    name: str
    scp: str
    stream: Stream
    table: Dict[str, str]
    kaldi_native: bool  # plain float32 matrices: Lhotse's own Kaldi storage reads them


def stage_sources(out_dir: str) -> List[Source]:
    """The streams of the stage output ``out_dir`` (from its meta.json), in its order."""
    record = stage_record(os.path.join(out_dir, "x.scp"))
    streams = record.get("streams")
    if not streams:
        raise LhotseExportError(f"{out_dir}/meta.json: missing, or it lists no streams (is "
                                f"{out_dir} a finished stage output?)")
    sources = []
    for entry in streams:
        stem = entry["stem"]
        stream = Stream.from_record({k: v for k, v in entry.items() if k != "stem"})
        scp = os.path.join(out_dir, f"{stem}.scp")
        table = {utt: _absolute(location, scp) for utt, location in read_scp_table(scp).items()}
        sources.append(Source(stem, scp, stream, table, _plain_float32(table, scp)))
    return sources


def _absolute(location: str, scp: str) -> str:
    parts = ark_offset(location)
    if parts is None:
        raise LhotseExportError(f"{scp}: '{location}' is not <ark>:<offset>: Lhotse manifests "
                                f"point at ark records")
    return f"{os.path.abspath(parts[0])}:{parts[1]}"


def _plain_float32(table: Dict[str, str], scp: str) -> bool:
    """Whether every record is a plain float32 matrix (Lhotse's KaldiReader reads those); the
    first record of each ark decides for the ark (a stage writes one type per stream)."""
    seen = set()
    for location in table.values():
        ark, offset = ark_offset(location)
        if ark in seen:
            continue
        seen.add(ark)
        with open(ark, "rb") as f:
            f.seek(offset)
            header = record_header(f.read(32), 0)
        if header is None or header[0] != np.float32 or len(header[1]) != 2:
            return False
    return True


def _frames(location: str) -> Tuple[int, ...]:
    ark, offset = ark_offset(location)
    with open(ark, "rb") as f:
        f.seek(offset)
        header = record_header(f.read(32), 0)
    if header is not None:
        return header[1]
    return tuple(np.asarray(kaldiio.load_mat(location)).shape)


def _lhotse_frames(duration: float, frame_shift: float) -> int:
    from lhotse.utils import compute_num_frames

    return compute_num_frames(duration, frame_shift, FEATURE_RATE)


def _exact(duration: float, frames: int, frame_shift: float, features: bool) -> bool:
    """Whether Lhotse, given ``duration``, returns all ``frames`` stored frames unchanged."""
    expected = _lhotse_frames(duration, frame_shift)
    if features:  # load_features and Lhotse's collation expect ``expected`` frames
        return expected == frames
    from lhotse.array import seconds_to_frames

    return seconds_to_frames(duration, frame_shift) >= frames


def cut_duration(utt: str, audio: float, temporal: Sequence[Tuple[int, float, bool]]) -> float:
    """The cut's duration: the audio's, else the span of its frames (see the module doc)."""
    if all(_exact(audio, n, shift, feats) for n, shift, feats in temporal):
        return audio
    for n, shift, _ in temporal:
        span = round(n * shift, 6)
        if all(_exact(span, m, s, feats) for m, s, feats in temporal):
            return span
    raise LhotseExportError(f"utterance '{utt}': no cut duration makes Lhotse return all the "
                            f"frames of its streams ({[(n, s) for n, s, _ in temporal]})")


def export(data_dir: str, out_dirs: Sequence[str], manifest_dir: str,
           features: Optional[str] = None, prefix: str = "",
           tables: Optional[str] = None) -> Dict[str, str]:
    """Writes ``<manifest_dir>/<prefix>{recordings,supervisions,cuts}.jsonl.gz`` for the
    utterances of the first stage output's first stream (the data dir's text order);
    returns their paths. ``features``: the scp stem attached as ``cut.features``;
    ``tables``: a directory of ``utt2<name>`` tables, each a custom field ``<name>``."""
    from lhotse import (Features, MonoCut, Recording, RecordingSet, SupervisionSegment,
                        SupervisionSet)
    from lhotse.array import Array, TemporalArray
    from lhotse.cut import CutSet

    sources = [s for out_dir in out_dirs for s in stage_sources(out_dir)]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise LhotseExportError(f"two stage outputs hold streams of the same name: {names}")
    frame_sources = [s for s in sources if s.stream.kind == FLOAT and s.stream.frame_level]
    if features is not None:
        chosen = [s for s in sources if s.name == features]
        if not chosen or chosen[0] not in frame_sources:
            raise LhotseExportError(f"--features {features}: not a frame-level float stream of "
                                    f"{', '.join(out_dirs)} (there: {names})")
        feats = chosen[0]
    else:
        feats = frame_sources[0] if frame_sources else None
    for s in sources:
        if s.stream.shape != VECTOR and not s.stream.frame_shift:
            raise LhotseExportError(f"{s.scp}: its frame shift is unknown (meta.json), Lhotse "
                                    f"needs it")

    extra = utterance_tables(tables, names) if tables else {}
    wav = read_table(os.path.join(data_dir, "wav.scp"))
    seg_path = os.path.join(data_dir, "segments")
    segments = read_segments(seg_path) if os.path.exists(seg_path) else None
    text = _optional(data_dir, "text")
    utt2spk = _optional(data_dir, "utt2spk")
    utt2dur = {k: float(v) for k, v in _optional(data_dir, "utt2dur").items()}
    recordings: Dict[str, Recording] = {}
    kaldi_scps: Dict[str, str] = {}
    cuts, supervisions = [], []
    for utt in sources[0].table:
        for s in sources:
            if utt not in s.table:
                raise LhotseExportError(f"utterance '{utt}' is not in {s.scp}")
        reco, start, end = segments[utt] if segments else (utt, 0.0, -1.0)
        if reco not in wav:
            raise LhotseExportError(f"utterance '{utt}': recording '{reco}' is not in "
                                    f"{data_dir}/wav.scp")
        if reco not in recordings:
            recordings[reco] = _recording(reco, wav[reco], data_dir)
        recording = recordings[reco]
        if end == -1:
            end = recording.duration
        audio = round(end - start, 6) if segments else utt2dur.get(utt, recording.duration)
        shapes = {s.name: _frames(s.table[utt]) for s in sources}
        temporal = [(shapes[s.name][0], s.stream.frame_shift, s is feats) for s in sources
                    if s.stream.shape != VECTOR]
        duration = cut_duration(utt, audio, temporal)
        custom = {}
        for s in sources:
            if s is feats:
                continue
            ark, offset = ark_offset(s.table[utt])
            array = Array(storage_type=ARK_STORAGE, storage_path=ark, storage_key=str(offset),
                          shape=list(shapes[s.name]))
            custom[s.name] = (array if s.stream.shape == VECTOR else
                              TemporalArray(array=array, temporal_dim=0,
                                            frame_shift=s.stream.frame_shift, start=start))
        for name, (path, table) in extra.items():
            if utt not in table:
                raise LhotseExportError(f"{path} has no line for utterance '{utt}'")
            custom[name] = table[utt]
        feature_manifest = None
        if feats is not None:
            rows, dim = shapes[feats.name]
            if feats.kaldi_native:
                storage, key = KALDI_STORAGE, utt
                path = _kaldi_scp(feats, manifest_dir, kaldi_scps)
            else:
                (path, offset), storage = ark_offset(feats.table[utt]), ARK_STORAGE
                key = str(offset)
            feature_manifest = Features(
                type=feats.name, num_frames=rows, num_features=dim,
                frame_shift=feats.stream.frame_shift, sampling_rate=FEATURE_RATE, start=start,
                duration=duration, storage_type=storage, storage_path=path, storage_key=key,
                recording_id=reco, channels=0)
        supervision = SupervisionSegment(id=utt, recording_id=reco, start=start,
                                         duration=audio, channel=0, text=text.get(utt),
                                         speaker=utt2spk.get(utt))
        supervisions.append(supervision)
        cut_supervision = supervision.with_offset(-start)
        cuts.append(MonoCut(id=utt, start=start, duration=duration, channel=0,
                            recording=recording, supervisions=[cut_supervision],
                            features=feature_manifest, custom=custom or None))
    os.makedirs(manifest_dir, exist_ok=True)
    paths = {name: os.path.join(manifest_dir, f"{prefix}{name}.jsonl.gz")
             for name in ("recordings", "supervisions", "cuts")}
    RecordingSet.from_recordings(recordings.values()).to_file(paths["recordings"])
    SupervisionSet.from_segments(supervisions).to_file(paths["supervisions"])
    CutSet.from_cuts(cuts).to_file(paths["cuts"])
    return paths


def utterance_tables(directory: str, taken: Sequence[str] = ()
                     ) -> Dict[str, Tuple[str, Dict[str, object]]]:
    """{field name: (path, {utt: value})} of the ``utt2<name>`` tables in ``directory`` but
    utt2dur and utt2spk; a value is a float where it parses as one, else its text."""
    if not os.path.isdir(directory):
        raise LhotseExportError(f"--tables {directory}: not a directory")
    found: Dict[str, Tuple[str, Dict[str, object]]] = {}
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if not entry.startswith("utt2") or entry in ("utt2dur", "utt2spk") or \
                not os.path.isfile(path) or "." in entry:
            continue
        name = entry[len("utt2"):]
        if name in taken:
            raise LhotseExportError(f"{path}: its field '{name}' is also a stream's name")
        found[name] = (path, {utt: _value(v) for utt, v in read_table(path).items()})
    if not found:
        raise LhotseExportError(f"--tables {directory}: it holds no utt2<name> table (but "
                                f"utt2dur, utt2spk)")
    return found


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _optional(data_dir: str, name: str) -> Dict[str, str]:
    path = os.path.join(data_dir, name)
    return read_table(path) if os.path.exists(path) else {}


def _recording(reco: str, entry: str, data_dir: str):
    from lhotse import Recording

    path = entry.strip()
    if path.endswith("|") or ark_offset(path) is not None or not os.path.isfile(path):
        raise LhotseExportError(f"{data_dir}/wav.scp: recording '{reco}' is '{path}': Lhotse "
                                f"recordings are exported for audio files only")
    return Recording.from_file(os.path.abspath(path), recording_id=reco)


def _kaldi_scp(source: Source, manifest_dir: str, done: Dict[str, str]) -> str:
    """The scp Lhotse's KaldiReader opens: the stage's own where its locations are absolute,
    else a copy of its text (locations made absolute) beside the manifests."""
    cache_key = source.scp
    if cache_key not in done:
        original = read_scp_table(source.scp)
        if all(original[utt] == location for utt, location in source.table.items()):
            done[cache_key] = os.path.abspath(source.scp)
        else:
            os.makedirs(manifest_dir, exist_ok=True)
            path = os.path.abspath(os.path.join(manifest_dir, f"{source.name}.scp"))
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(f"{utt} {location}\n" for utt, location in source.table.items())
            done[cache_key] = path
    return done[cache_key]
