"""One job of a stage: its outputs in ``<split_dir>``, and the record that says it finished.

Every stage's job (an extraction through the engine, a token assignment of a feats.scp part)
writes through ``JobWriter``: per stream, ``<stem>.<n>.ark`` and ``<stem>.<n>.scp`` (the scp
appears only once its ark is complete), then ``utt2dur.<n>`` (seconds of audio per utterance,
where the job reads audio), ``utt2num_frames.<n>`` (frame-level streams), ``bad_utts.<n>``
(utterances skipped with ``--skip_bad true``, with the reason) and, last, ``done.<n>``: a JSON
record of what determines the output (``config``, the same for every job of a stage, and
``input``, this job's own), the streams and what the job covered. The merge reads the records,
and a rerun skips the job when ``is_done``. A job that fails leaves neither its scps nor
``done.<n>``; an output it cannot write (disk full, file size limit) raises ``WriteError``,
naming the file.

A long job commits as it goes (``checkpoint``, after each window of the engine): the arks and
partial scps are synced to disk, then a line appended to ``progress.<n>`` says how far they
are committed (their sizes, the utterances covered, their durations and bad ones). A rerun of
the job with the same config and input (after a SIGKILL, a node failure, a Slurm requeue, or an
error other than a full disk) cuts the files back to the last committed line and goes on from
the next utterance; with anything else it starts from zero. The final scps still appear only
when the whole job is done, so no scp line ever points into an uncommitted part.

The merge writes the record of the whole stage beside its scps (``meta.json``): the config and
the streams, so that a later stage can tell what a feature is (its frame shift, for one).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import (TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from speechdump.data import Utterance, atomic_path, read_table, write_table
from speechdump.errors import WriteError
from speechdump.extractors.base import Extractor, Stream
from speechdump.kaldi_io import PARTIAL_SUFFIX, ArkScpWriter, writing
from speechdump.provenance import config_changes, input_changes

if TYPE_CHECKING:
    from speechdump import engine

MERGED_RECORD = "meta.json"


def stream_names(tag: str, extractor: Extractor) -> Dict[str, str]:
    """Extractor stream -> file stem: ``tag`` for a single unnamed stream, else ``tag_<name>``."""
    return {stream.name: stream.stem(tag) for stream in extractor.streams}


def done_path(split_dir: str, job: int) -> str:
    return os.path.join(split_dir, f"done.{job}")


def progress_path(split_dir: str, job: int) -> str:
    return os.path.join(split_dir, f"progress.{job}")


def read_done(split_dir: str, job: int) -> dict:
    with open(done_path(split_dir, job), encoding="utf-8") as f:
        return json.load(f)


def _ids(items: Iterable[Union[Utterance, str]]) -> List[str]:
    return [getattr(item, "utt_id", item) for item in items]


def redo_reason(split_dir: str, job: int, items: Sequence[Union[Utterance, str]], config: dict,
                input: Optional[dict] = None,
                input_lines: Optional[Sequence[Tuple[str, str]]] = None,
                skip_bad: bool = True) -> Optional[str]:
    """None when this job finished before with this config and input, over these utterances
    (``items``: Utterances or ids: the ids in its first stream's scp and in its bad_utts are
    exactly theirs); else why it must run, in words. ``input_lines`` (see
    ``provenance.input_lines``) let it name the utterances whose input changed. Without
    ``skip_bad``, a job that skipped bad utterances runs again (and fails on the first)."""
    if not os.path.exists(done_path(split_dir, job)):
        return "it has no finished output"
    record = read_done(split_dir, job)
    if record.get("bad") and not skip_bad:
        return (f"it skipped {record['bad']} bad utterances with --skip_bad true, and this run "
                "has --skip_bad false")
    if record.get("config") != config:
        return config_changes(record.get("config") or {}, config)
    if record.get("input", {}) != (input or {}):
        if input_lines is None:
            return "its input changed"
        return input_changes(split_dir, job, input_lines)
    streams = record.get("streams") or [None]
    if not isinstance(streams[0], dict):
        return "its record predates typed streams"
    scp = os.path.join(split_dir, f"{streams[0]['stem']}.{job}.scp")
    if not os.path.exists(scp):
        return f"its output {scp} is missing"
    covered = list(read_table(scp)) + list(read_table(os.path.join(split_dir,
                                                                   f"bad_utts.{job}")))
    if sorted(covered) != sorted(_ids(items)):
        return "its outputs do not cover its utterances"
    return None


def is_done(split_dir: str, job: int, items: Sequence[Union[Utterance, str]], config: dict,
            input: Optional[dict] = None) -> bool:
    """True when the job finished before with this config and input (see ``redo_reason``)."""
    return redo_reason(split_dir, job, items, config, input) is None


def _stored(array, dtype, utt_id: str, stream: str) -> np.ndarray:
    """``array`` in its stream's storage type; an integer stream takes integers only, whose
    values int32 holds (tokens are never rounded or wrapped)."""
    array = np.asarray(array)
    if dtype is np.int32 and array.dtype != np.int32:
        if array.dtype.kind not in "iu":
            raise TypeError(f"'{utt_id}': stream '{stream}' is an int stream, the extractor "
                            f"gave {array.dtype}")
        if array.size and (array.min() < np.iinfo(np.int32).min
                           or array.max() > np.iinfo(np.int32).max):
            raise TypeError(f"'{utt_id}': stream '{stream}' holds values beyond int32")
    return array.astype(dtype, copy=False)


def _write_table(path: str, items) -> None:
    with writing(path):
        write_table(path, items)


class JobWriter:
    """The outputs of job ``job`` in ``split_dir`` (see the module docstring).

    ``streams``: (file stem, Stream) of each output; ``dtype`` and ``compress`` apply to float
    streams (int streams are int32). Use as a context manager: ``write`` each utterance's
    output as it comes, then ``finish``; an exception in the block (or a block left without
    ``finish``) removes everything the job wrote, so no scp of an unfinished job survives.
    What the job wrote before (its ``done.<n>`` and scps) goes when the writer opens: it
    describes arks about to be rewritten.
    """

    def __init__(self, split_dir: str, job: int, streams: Sequence[Tuple[str, Stream]],
                 dtype: str = "float32", compress: bool = False,
                 config: Optional[dict] = None, input: Optional[dict] = None):
        self.split_dir, self.job = split_dir, job
        self.streams = list(streams)
        self.config, self.input = config or {}, input or {}
        self.frame_level = any(stream.frame_level for _, stream in self.streams)
        self._types = {stream.name: stream.storage_dtype(dtype) for _, stream in self.streams}
        self._compress = compress
        self._writers: Dict[str, ArkScpWriter] = {}
        self._num_frames: List[Tuple[str, str]] = []
        self._finished = False
        # What a run before this one committed (``progress.<n>``), and how much of this run's
        # durations, bad utterances and frame counts are in the journal.
        self.resumed = 0  # utterances of the input covered before
        self._prior_durations: List[Tuple[str, float]] = []
        self._prior_bad: List[Tuple[str, str]] = []
        self._journaled = (0, 0, 0)

    def _path(self, name: str) -> str:
        return os.path.join(self.split_dir, name)

    def __enter__(self) -> "JobWriter":
        with writing(self.split_dir):
            os.makedirs(self.split_dir, exist_ok=True)
        stale = [done_path(self.split_dir, self.job)] + [self._path(f"{stem}.{self.job}.scp")
                                                         for stem, _ in self.streams]
        for path in stale:
            if os.path.exists(path):
                os.remove(path)
        committed = self._committed_before()
        if committed is None and os.path.exists(self._progress):
            os.remove(self._progress)
        try:
            for stem, stream in self.streams:
                self._writers[stream.name] = ArkScpWriter(
                    self._path(f"{stem}.{self.job}.ark"), self._path(f"{stem}.{self.job}.scp"),
                    compress=self._compress and self._types[stream.name] == np.float32,
                    resume_at=tuple(committed["sizes"][stem]) if committed else None)
        except BaseException:
            self.discard()
            raise
        if committed:
            self.resumed = committed["consumed"]
            self._prior_durations = [tuple(d) for d in committed["durations"]]
            self._prior_bad = [tuple(b) for b in committed["bad"]]
            self._num_frames = [tuple(f) for f in committed["frames"]]
            self._journaled = (0, 0, len(self._num_frames))
        return self

    @property
    def _progress(self) -> str:
        return progress_path(self.split_dir, self.job)

    def _committed_before(self) -> Optional[dict]:
        """What ``progress.<n>`` says was committed, where it was written for this config and
        input and its files still hold what it says; else None (the job starts from zero)."""
        try:
            with open(self._progress, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except OSError:
            return None
        try:
            header = json.loads(lines[0])
            # A line cut short by the kill is the last one; it committed nothing.
            entries = [json.loads(line) for line in lines[1:-1]]
        except ValueError:
            return None
        if (header.get("config") != self.config or header.get("input") != self.input
                or not entries):
            return None
        last = entries[-1]
        for stem, _ in self.streams:
            sizes = last["sizes"].get(stem)
            if sizes is None:
                return None
            for name, size in zip((f"{stem}.{self.job}.ark",
                                   f"{stem}.{self.job}.scp{PARTIAL_SUFFIX}"), sizes):
                path = self._path(name)
                if not os.path.exists(path) or os.path.getsize(path) < size:
                    return None
        return {"consumed": last["consumed"], "sizes": last["sizes"],
                "durations": [d for e in entries for d in e["durations"]],
                "bad": [b for e in entries for b in e["bad"]],
                "frames": [n for e in entries for n in e["frames"]]}

    def checkpoint(self, consumed: int, durations: Sequence[Tuple[str, float]] = (),
                   bad: Sequence[Tuple[str, str]] = ()) -> None:
        """Commits what is written so far: the first ``consumed`` utterances of the input
        (counting those of a run this one resumed). ``durations`` and ``bad``: this run's so
        far, as ``finish`` takes them."""
        sizes = {stem: self._writers[stream.name].sync() for stem, stream in self.streams}
        done_dur, done_bad, done_frames = self._journaled
        entry = {"consumed": consumed, "sizes": sizes,
                 "durations": [[u, round(s, 4)] for u, s in durations[done_dur:]],
                 "bad": [list(b) for b in bad[done_bad:]],
                 "frames": [list(n) for n in self._num_frames[done_frames:]]}
        new = not os.path.exists(self._progress)
        with writing(self._progress), open(self._progress, "a", encoding="utf-8") as f:
            if new:
                f.write(json.dumps({"config": self.config, "input": self.input}) + "\n")
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._journaled = (len(durations), len(bad), len(self._num_frames))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and os.path.exists(self._progress) and not issubclass(
                exc_type, WriteError):
            self._close()  # committed windows stay for a rerun; nothing points past them
        elif exc_type is not None:
            self.discard()
        elif not self._finished:
            self.discard()
            raise RuntimeError(f"job {self.job}: its writer was closed without finish()")

    @property
    def count(self) -> int:
        """Utterances written so far."""
        return next(iter(self._writers.values())).count if self._writers else 0

    def discard(self) -> None:
        """Removes every ark and scp of the job, committed or not, its ``progress.<n>`` and
        its ``done.<n>``."""
        for writer in self._writers.values():
            writer.abort()
        if os.path.exists(self._progress):
            os.remove(self._progress)
        if self._finished:
            os.remove(done_path(self.split_dir, self.job))
            self._finished = False

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def write(self, utt_id: str, output) -> None:
        """One utterance's output: an array for a single unnamed stream, else
        ``{stream name: array}``."""
        arrays: Mapping = output if isinstance(output, dict) else {"": output}
        try:
            for name, array in arrays.items():
                self._writers[name].write(utt_id, _stored(array, self._types[name], utt_id,
                                                          name))
        except WriteError:
            self.discard()  # at once: the partial arks' space is then free for the job's log
            raise
        if self.frame_level:
            self._num_frames.append((utt_id, str(len(next(iter(arrays.values()))))))

    def finish(self, durations: Optional[Iterable[Tuple[str, float]]] = None,
               bad: Sequence[Tuple[str, str]] = (), **summary) -> dict:
        """Commits the arks, writes the tables and, last, ``done.<n>``; returns the record.
        ``durations``: (id, seconds) of the job's audio, None where it reads none; ``summary``:
        more figures for the record (e.g. ``audio_seconds``)."""
        for writer in self._writers.values():
            writer.commit()
        if durations is not None:
            _write_table(self._path(f"utt2dur.{self.job}"),
                         ((u, f"{s:.4f}") for u, s in self._prior_durations + list(durations)))
        if self.frame_level:
            _write_table(self._path(f"utt2num_frames.{self.job}"), self._num_frames)
        bad = self._prior_bad + list(bad)
        _write_table(self._path(f"bad_utts.{self.job}"), bad)
        record = {"config": self.config, "input": self.input, "finished": time.time(),
                  "streams": [dict(stream.to_record(), stem=stem) for stem, stream in self.streams],
                  "utterances": self.count, "bad": len(bad), "resumed": self.resumed, **summary}
        done = done_path(self.split_dir, self.job)
        with writing(done), atomic_path(done) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        self._finished = True
        if os.path.exists(self._progress):
            os.remove(self._progress)
        return record


def bytes_read() -> int:
    """Bytes this process has read through system calls so far (Linux), else 0."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return 0


def run_job(utterances: Sequence[Utterance], extractor: Extractor, tag: str, split_dir: str,
            job: int, options: engine.EngineOptions, dtype: str = "float32",
            compress: bool = False, config: Optional[dict] = None,
            input: Optional[dict] = None, why: str = "") -> engine.JobStats:
    """Runs the extraction job; ``config`` and ``input`` (what determines its output) are
    recorded for ``redo_reason``, and ``why`` it ran for the stage's summary."""
    streams = [(stream.stem(tag), stream) for stream in extractor.streams]
    with JobWriter(split_dir, job, streams, dtype, compress, config, input) as out:
        from speechdump import engine  # here: reading job records (the merge) needs no torch

        if out.resumed:
            logging.info("job %d resumes after the %d of its %d utterances it committed before",
                         job, out.resumed, len(utterances))
        before = bytes_read()  # the model is loaded: what is read from here on is the audio
        stats = engine.run(utterances[out.resumed:], extractor, out.write, options, desc=tag,
                           checkpoint=lambda n, stats: out.checkpoint(out.resumed + n,
                                                                      stats.durations, stats.bad))
        stats.bytes_read = bytes_read() - before
        # With --vad true, also the seconds of speech the extractor got.
        trimmed = ({"speech_seconds": round(stats.kept_seconds, 3)}
                   if options.trim is not None else {})
        out.finish(stats.durations, stats.bad, audio_seconds=round(stats.audio_seconds, 3),
                   bytes_read=stats.bytes_read, why=why, **trimmed)
    return stats


# ----------------------------------------------------------------------------- the stage's record

def write_merged_record(out_dir: str, record: dict) -> str:
    """Writes ``<out_dir>/meta.json`` (atomically); returns its path."""
    path = os.path.join(out_dir, MERGED_RECORD)
    with writing(path), atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path


def merged_stream(scp_path: str) -> Optional[Stream]:
    """The stream an scp written by a stage holds, from the stage's ``meta.json`` beside it;
    None where there is no such record (an scp made otherwise) or it names no such stream."""
    path = os.path.join(os.path.dirname(os.path.abspath(scp_path)), MERGED_RECORD)
    stem = os.path.basename(scp_path)
    stem = stem[:-len(".scp")] if stem.endswith(".scp") else stem
    try:
        with open(path, encoding="utf-8") as f:
            streams = json.load(f).get("streams", [])
    except (OSError, ValueError):
        return None
    for record in streams:
        if isinstance(record, dict) and record.get("stem") == stem:
            return Stream.from_record({k: v for k, v in record.items() if k != "stem"})
    return None
