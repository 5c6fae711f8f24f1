"""One job of a stage: its utterances through the engine into named ark/scp streams.

In ``<split_dir>``, job ``n`` writes, per stream, ``<stream>.<n>.ark`` and ``<stream>.<n>.scp``
(the scp appears only once its ark is complete), then ``utt2dur.<n>`` (seconds of audio per
extracted utterance), ``utt2num_frames.<n>`` (frame-level streams), ``bad_utts.<n>``
(utterances skipped with ``--skip_bad true``, with the reason) and, last, ``done.<n>``: a JSON
record of what the job covered, read by the merge and by a rerun, which then skips the job.
A job that fails leaves neither its scps nor ``done.<n>``; an output it cannot write (disk full,
file size limit) raises ``storage.WriteError``, naming the file.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import numpy as np

from speechdump.data import Utterance, atomic_path, read_table, write_table
from speechdump.extractors.base import Extractor
from speechdump.storage import ArkScpWriter, WriteError, writing

if TYPE_CHECKING:
    from speechdump import engine


def stream_names(tag: str, extractor: Extractor) -> Dict[str, str]:
    """Extractor stream -> file stem: ``tag`` for a single unnamed stream, else ``tag_<name>``."""
    return {name: f"{tag}_{name}" if name else tag for name in extractor.streams}


def done_path(split_dir: str, job: int) -> str:
    return os.path.join(split_dir, f"done.{job}")


def read_done(split_dir: str, job: int) -> dict:
    with open(done_path(split_dir, job), encoding="utf-8") as f:
        return json.load(f)


def is_done(split_dir: str, job: int, utterances: Sequence[Utterance], config: dict) -> bool:
    """True when this job finished before, with this configuration, over these utterances."""
    if not os.path.exists(done_path(split_dir, job)):
        return False
    if read_done(split_dir, job).get("config") != config:
        return False
    covered = list(read_table(os.path.join(split_dir, f"utt2dur.{job}")))
    covered += list(read_table(os.path.join(split_dir, f"bad_utts.{job}")))
    return sorted(covered) == sorted(u.utt_id for u in utterances)


def _write_table(path: str, items) -> None:
    with writing(path):
        write_table(path, items)


def run_job(utterances: Sequence[Utterance], extractor: Extractor, tag: str, split_dir: str,
            job: int, options: engine.EngineOptions, dtype: str = "float32",
            compress: bool = False, config: Optional[dict] = None) -> engine.JobStats:
    """Runs the job; ``config`` (what determines its output) is recorded for ``is_done``."""
    with writing(split_dir):
        os.makedirs(split_dir, exist_ok=True)
    stems = stream_names(tag, extractor)
    # Everything this job wrote before describes arks about to be rewritten.
    stale = [done_path(split_dir, job)] + [os.path.join(split_dir, f"{stem}.{job}.scp")
                                            for stem in stems.values()]
    for path in stale:
        if os.path.exists(path):
            os.remove(path)
    writers: Dict[str, ArkScpWriter] = {}
    num_frames = []

    def discard() -> None:
        for writer in writers.values():
            writer.abort()

    def write(utt_id: str, output) -> None:
        arrays = output if isinstance(output, dict) else {"": output}
        try:
            for name, array in arrays.items():
                kind = np.float32 if name in extractor.exact_streams else dtype
                writers[name].write(utt_id, np.asarray(array).astype(kind, copy=False))
        except WriteError:
            discard()  # at once: the partial arks' space is then free for the job's log
            raise
        if extractor.frame_level:
            num_frames.append((utt_id, str(len(next(iter(arrays.values()))))))

    try:
        for name, stem in stems.items():
            writers[name] = ArkScpWriter(os.path.join(split_dir, f"{stem}.{job}.ark"),
                                         os.path.join(split_dir, f"{stem}.{job}.scp"),
                                         compress=compress and name not in extractor.exact_streams)
        from speechdump import engine  # here: reading job records (the merge) needs no torch

        stats = engine.run(utterances, extractor, write, options, desc=tag)
        for writer in writers.values():
            writer.commit()
        _write_table(os.path.join(split_dir, f"utt2dur.{job}"),
                     ((u, f"{s:.4f}") for u, s in stats.durations))
        if extractor.frame_level:
            _write_table(os.path.join(split_dir, f"utt2num_frames.{job}"), num_frames)
        _write_table(os.path.join(split_dir, f"bad_utts.{job}"), stats.bad)
        record = {"config": config or {}, "streams": list(stems.values()),
                  "frame_level": extractor.frame_level,
                  "utterances": stats.done, "bad": len(stats.bad),
                  "audio_seconds": round(stats.audio_seconds, 3)}
        done = done_path(split_dir, job)
        with writing(done), atomic_path(done) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
    except BaseException:
        # No scp of an unfinished job survives, even one committed before a later step failed.
        discard()
        raise
    return stats
