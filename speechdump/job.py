"""One job's outputs: ``<prefix>.ark``, ``<prefix>.scp`` (written last: the job's "done" mark),
``<prefix>.utt2dur`` (seconds of audio of each extracted utterance) and ``<prefix>.bad_utts``
(utterances skipped with ``--skip_bad true``, with the reason)."""

from __future__ import annotations

import os
from typing import Sequence

from speechdump import engine
from speechdump.data import Utterance, read_keys, write_table
from speechdump.extractors.base import Extractor
from speechdump.storage import ArkScpWriter


def is_done(prefix: str, utterances: Sequence[Utterance]) -> bool:
    """True when this job finished before over exactly these utterances."""
    scp, bad = f"{prefix}.scp", f"{prefix}.bad_utts"
    if not os.path.exists(scp):
        return False
    covered = read_keys(scp) + (read_keys(bad) if os.path.exists(bad) else [])
    return sorted(covered) == sorted(u.utt_id for u in utterances)


def run_job(utterances: Sequence[Utterance], extractor: Extractor, prefix: str,
            options: engine.EngineOptions, desc: str = "extract") -> engine.JobStats:
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    for stale in (f"{prefix}.scp", f"{prefix}.bad_utts"):  # they describe the ark about to be rewritten
        if os.path.exists(stale):
            os.remove(stale)
    with ArkScpWriter(f"{prefix}.ark", f"{prefix}.scp") as writer:
        stats = engine.run(utterances, extractor, writer.write, options, desc=desc)
        write_table(f"{prefix}.utt2dur", ((u, f"{s:.4f}") for u, s in stats.durations))
        write_table(f"{prefix}.bad_utts", stats.bad)
    return stats
