"""The extraction loop of one job: prefetching loader threads -> batched forward -> ordered writer.

Loader threads decode, resample (once per utterance, through a shared resampler cache) and run
the extractor's per-utterance ``prepare`` ahead of the model, at most ``prefetch`` utterances
ahead so memory stays bounded. Batches are bounded by total audio seconds and by count; results
are written in the job's input order whatever the batch composition.
"""

from __future__ import annotations

import collections
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from speechdump.audio import ResamplerCache, UtteranceError, load_audio
from speechdump.data import Utterance
from speechdump.extractors.base import Extractor


@dataclass
class EngineOptions:
    batch_seconds: float = 60.0
    batch_size: int = 64
    num_workers: int = 2
    prefetch: int = 64
    skip_bad: bool = False
    progress: bool = True


@dataclass
class JobStats:
    done: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    durations: List[Tuple[str, float]] = field(default_factory=list)
    bad: List[Tuple[str, str]] = field(default_factory=list)  # (utt id, reason)


def _in_order(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int) -> Iterator:
    """``map`` that keeps at most ``depth`` calls in flight and yields results in input order."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _Loader:
    """Decode + resample + prepare for one utterance; failures come back as values, not raises."""

    def __init__(self, extractor: Extractor):
        self.extractor = extractor
        self.resamplers = ResamplerCache()

    def __call__(self, utt: Utterance):
        extractor = self.extractor
        try:
            wave = load_audio(utt, extractor.sample_rate, self.resamplers)
            seconds = len(wave) / extractor.sample_rate
            if seconds < extractor.min_seconds:
                raise UtteranceError(utt.utt_id, utt.source,
                                     f"too short: {seconds:.3f} s, the model needs at least "
                                     f"{extractor.min_seconds} s")
            try:
                return utt, extractor.prepare(wave), seconds
            except ValueError as exc:
                raise UtteranceError(utt.utt_id, utt.source, str(exc)) from exc
        except UtteranceError as exc:
            return utt, exc, 0.0


def run(utterances: Sequence[Utterance], extractor: Extractor,
        write: Callable[[str, np.ndarray], None], options: EngineOptions,
        desc: str = "extract") -> JobStats:
    """Extracts every utterance and calls ``write(utt_id, array)`` in input order.

    A bad utterance raises its UtteranceError, or with ``skip_bad`` is recorded in
    ``JobStats.bad`` and skipped.
    """
    stats = JobStats()
    start = time.time()
    loader = _Loader(extractor)
    bar = tqdm(total=len(utterances), desc=desc, unit="utt", file=sys.stderr,
               disable=not options.progress, mininterval=1.0 if sys.stderr.isatty() else 10.0)
    batch: list = []
    batch_cost = 0.0

    def flush():
        nonlocal batch, batch_cost
        if not batch:
            return
        outputs = extractor.forward([prepared for _, prepared, _ in batch])
        for (utt, _, seconds), array in zip(batch, outputs):
            write(utt.utt_id, array)
            stats.done += 1
            stats.audio_seconds += seconds
            stats.durations.append((utt.utt_id, seconds))
        bar.update(len(batch))
        bar.set_postfix(audio=f"{stats.audio_seconds / 3600:.3f}h",
                        rtf=f"{stats.audio_seconds / max(time.time() - start, 1e-9):.1f}x")
        batch, batch_cost = [], 0.0

    workers = max(options.num_workers, 1)
    depth = max(options.prefetch, 2 * workers) if options.num_workers > 0 else 1
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="loader") as pool:
            for utt, prepared, seconds in _in_order(pool, loader, utterances, depth):
                if isinstance(prepared, UtteranceError):
                    if not options.skip_bad:
                        raise prepared
                    stats.bad.append((utt.utt_id, prepared.reason))
                    bar.update(1)
                    continue
                batch.append((utt, prepared, seconds))
                batch_cost += extractor.cost(prepared)
                if batch_cost >= options.batch_seconds or len(batch) >= options.batch_size:
                    flush()
            flush()
    finally:
        bar.close()  # ends the bar's line, so an error message starts a line of its own
    stats.wall_seconds = time.time() - start
    return stats
