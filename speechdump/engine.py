"""The extraction loop of one job: prefetching loader threads -> batched forward -> ordered writer.

Loader threads decode, resample (once per utterance, through a shared resampler cache), trim
where asked (``EngineOptions.trim``: --vad true) and run the extractor's per-utterance
``prepare`` ahead of the model. Utterances are taken in windows of at most ``sort_window``
utterances and ``sort_window_seconds`` of audio; each window is sorted by length and cut into
batches bounded by padded audio seconds and by count, so padding stays small, while the next
utterances load. The batches of a window run on ``compute_workers``
threads at once where the extractor allows it (``concurrent_forward``), each forward pass at the
job's ``--precision`` (``speechdump.precision``). Results are written in the job's input order,
so the output never depends on thread timing; batch composition changes values only at the
rounding of the kernels picked for each batch shape (README, Exactness). A window is cut from
where the last one ended, so a job resumed after a committed window (``speechdump.job``) forms
the same windows, and batches, as an uninterrupted run.

Memory is bounded by the window being run (its prepared inputs and all its outputs: for
frame-level features of every layer of an SSL model, about 2 MB per second of audio) and the
utterances loaded ahead of it: up to two windows of them, in utterances and in seconds of
audio, plus the ``num_workers`` loads running.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from speechdump import containers
from speechdump.audio import (MAX_OVERSHOOT, ResamplerCache, UtteranceError, decode_audio,
                              to_mono)
from speechdump.batching import plan_batches
from speechdump.data import Utterance
from speechdump.extractors.base import Extractor
from speechdump.precision import DEFAULT as DEFAULT_PRECISION
from speechdump.precision import check_finite, forward_context


@dataclass
class EngineOptions:
    batch_seconds: float = 60.0  # padded audio seconds per forward pass
    batch_size: int = 64
    num_workers: int = 2  # loader threads
    # Forward passes run at once (threads; each should then use one torch thread), for
    # extractors whose forward allows it (``concurrent_forward``); else one.
    compute_workers: int = 1
    sort_window: int = 128  # utterances sorted by length together,
    sort_window_seconds: float = 600.0  # and at most this much audio (long utterances)
    skip_bad: bool = False
    progress: bool = True
    channel: str = "mean"  # of multi-channel audio: "mean" or a channel number (0: the first)
    max_overshoot: float = MAX_OVERSHOOT  # seconds a segment may end past its recording
    # --precision of the forward passes, on the device the model runs on (speechdump.precision)
    precision: str = DEFAULT_PRECISION
    device: str = "cpu"
    # Applied in the loader threads to each waveform at the extractor's rate, before
    # ``prepare``: ``trim(wave, rate)`` -> the part the extractor gets (--vad true:
    # ``speechdump.vad.SpeechTrimmer``, the speech regions concatenated); a ValueError (its
    # reason) makes the utterance a bad one.
    trim: Optional[Callable[[np.ndarray, int], np.ndarray]] = None


@dataclass
class JobStats:
    done: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    durations: List[Tuple[str, float]] = field(default_factory=list)
    bad: List[Tuple[str, str]] = field(default_factory=list)  # (utt id, reason)
    bytes_read: int = 0  # by the job's process while it ran (its audio and shards)
    kept_seconds: float = 0.0  # of audio_seconds, what the extractor got (after ``trim``)


class _Prefetch:
    """Loads items ahead of the model on ``workers`` threads; iterating gives the results
    (``(utt, prepared, seconds, ...)``) in input order.

    A load starts only while fewer than ``workers`` run and what is ahead of the model (loaded
    or loading, not yet taken) is under ``max_items`` results and, counting the loaded ones
    only, under ``max_seconds`` of audio. Each finished load starts the next, so the loaders
    keep working while the model runs, and memory ahead of the model is what has actually
    loaded plus at most ``workers`` loads, whatever the lengths: nothing is queued on a guess,
    so hour-long recordings never pile up ahead of it.
    """

    def __init__(self, load: Callable, items: Iterable, workers: int, max_items: int,
                 max_seconds: float):
        self._load, self._items = load, iter(items)
        self._workers, self._max_items, self._max_seconds = workers, max_items, max_seconds
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="loader")
        self._lock = threading.Lock()
        self._ahead: collections.deque = collections.deque()  # futures not yet taken, in order
        self._running = 0
        self._loaded_seconds = 0.0  # of the loaded results not yet taken
        self._stopped = False

    def _start_loads(self) -> None:
        """Starts what the bounds allow; called under the lock."""
        while (not self._stopped and self._running < self._workers
               and len(self._ahead) < self._max_items
               and self._loaded_seconds < self._max_seconds):
            item = next(self._items, _END)
            if item is _END:
                self._stopped = True
                break
            self._running += 1
            self._ahead.append(self._pool.submit(self._run, item))

    def _run(self, item):
        seconds = 0.0
        try:
            result = self._load(item)
            seconds = result[2]
            return result
        finally:
            with self._lock:
                self._running -= 1
                self._loaded_seconds += seconds
                self._start_loads()

    def __iter__(self) -> Iterator[tuple]:
        while True:
            with self._lock:
                self._start_loads()
                if not self._ahead:
                    return
                future = self._ahead.popleft()
            result = future.result()
            with self._lock:
                self._loaded_seconds -= result[2]
            yield result

    def close(self) -> None:
        """Starts nothing more, drops what has not started, waits for the loads running."""
        with self._lock:
            self._stopped = True
        self._pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _windows(results: Iterable[tuple], max_items: int, max_seconds: float) -> Iterator[list]:
    """Consecutive loader results ``(utt, prepared, seconds)``; a window is closed at
    ``max_items`` of them or as soon as it holds ``max_seconds`` of audio (without waiting for
    the next result, which may still be loading)."""
    window: list = []
    seconds = 0.0
    for result in results:
        window.append(result)
        seconds += result[2]
        if len(window) == max_items or seconds >= max_seconds:
            yield window
            window, seconds = [], 0.0
    if window:
        yield window


class _Loader:
    """Decode + resample (+ trim) + prepare for one utterance: ``(utt, prepared, seconds,
    kept seconds)``; failures come back as values, not raises."""

    def __init__(self, extractor: Extractor, options: EngineOptions):
        self.extractor = extractor
        self.options = options
        self.resamplers = ResamplerCache()

    def __call__(self, utt: Utterance):
        extractor = self.extractor
        try:
            decoded, rate = decode_audio(utt, self.options.channel, self.options.max_overshoot)
            wave = to_mono(utt, decoded, rate, extractor.sample_rate, self.resamplers)
            if not extractor.measures_decoded:
                decoded = None  # freed before prepare: an hour of 48 kHz stereo is 1.4 GB
            seconds = len(wave) / extractor.sample_rate
            trim = self.options.trim
            if trim is not None:
                try:
                    wave = trim(wave, extractor.sample_rate)
                except ValueError as exc:
                    raise UtteranceError(utt.utt_id, utt.source, str(exc)) from exc
            kept = len(wave) / extractor.sample_rate
            if kept < extractor.min_seconds:
                raise UtteranceError(utt.utt_id, utt.source,
                                     f"too short: {kept:.3f} s"
                                     + (f" of speech in {seconds:.3f} s" if trim else "")
                                     + f", the model needs at least {extractor.min_seconds} s")
            try:
                prepared = (extractor.prepare(wave) if decoded is None
                            else extractor.prepare_decoded(wave, decoded))
                return utt, prepared, seconds, kept
            except ValueError as exc:
                raise UtteranceError(utt.utt_id, utt.source, str(exc)) from exc
        except UtteranceError as exc:
            return utt, exc, 0.0, 0.0


def run(utterances: Sequence[Utterance], extractor: Extractor,
        write: Callable[[str, np.ndarray], None], options: EngineOptions,
        desc: str = "extract",
        checkpoint: Optional[Callable[[int, JobStats], None]] = None) -> JobStats:
    """Extracts every utterance and calls ``write(utt_id, array)`` in input order, and
    ``checkpoint(n, stats)`` after each window: the first ``n`` utterances are written.

    A bad utterance raises its UtteranceError, or with ``skip_bad`` is recorded in
    ``JobStats.bad`` and skipped.
    """
    stats = JobStats()
    start = time.time()
    loader = _Loader(extractor, options)
    bar = tqdm(total=len(utterances), desc=desc, unit="utt", file=sys.stderr,
               disable=not options.progress, mininterval=1.0 if sys.stderr.isatty() else 10.0)
    window = max(options.sort_window, 1)
    workers = options.compute_workers if extractor.concurrent_forward else 1
    forward = (ThreadPoolExecutor(workers, thread_name_prefix="forward") if workers > 1
               else None)
    # The shard readers learn what this job reads, to keep only what is still to come.
    with containers.reading(u.source for u in utterances):
        # Up to two windows of utterances load while the model runs on this one.
        loaded = _Prefetch(loader, utterances, max(options.num_workers, 1),
                           2 * window if options.num_workers > 0 else 1,
                           2 * options.sort_window_seconds)
        consumed = 0
        try:
            for chunk in _windows(iter(loaded), window, options.sort_window_seconds):
                # The window's outputs live only inside _run_window; its loaded inputs are
                # released here, before the next window is gathered.
                _run_window(chunk, extractor, write, options, stats, bar, forward)
                consumed += len(chunk)
                del chunk
                if checkpoint is not None:
                    checkpoint(consumed, stats)
                speed = stats.audio_seconds / max(time.time() - start, 1e-9)
                bar.set_postfix(audio=f"{stats.audio_seconds / 3600:.3f}h", speed=f"{speed:.1f}x")
        finally:
            loaded.close()
            if forward is not None:
                forward.shutdown(wait=True, cancel_futures=True)
            bar.close()  # ends the bar's line, so an error message starts a line of its own
    stats.wall_seconds = time.time() - start
    return stats


def _run_window(chunk: list, extractor: Extractor, write: Callable[[str, np.ndarray], None],
                options: EngineOptions, stats: JobStats, bar: tqdm,
                forward: Optional[ThreadPoolExecutor]) -> None:
    """One window of loader results: bad ones raised or recorded, the rest run and written."""
    good = []
    for utt, prepared, seconds, kept in chunk:
        if not isinstance(prepared, UtteranceError):
            good.append((utt, prepared, seconds, kept))
        elif options.skip_bad:
            stats.bad.append((utt.utt_id, prepared.reason))
        else:
            raise prepared
    bar.update(len(chunk) - len(good))
    outputs = _forward_window(extractor, [p for _, p, _, _ in good], options, bar, forward)
    for (utt, _, seconds, kept), array in zip(good, outputs):
        write(utt.utt_id, array)
        stats.done += 1
        stats.audio_seconds += seconds
        stats.kept_seconds += kept
        stats.durations.append((utt.utt_id, seconds))


def _forward_window(extractor: Extractor, items: list, options: EngineOptions, bar: tqdm,
                    forward: Optional[ThreadPoolExecutor]) -> List[np.ndarray]:
    """Runs a window of prepared items in length-sorted batches, on the ``forward`` workers if
    given; outputs in the items' order."""
    costs = [extractor.cost(item) for item in items]
    outputs: List[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
    batch_size = min(options.batch_size, extractor.max_batch_size or options.batch_size)
    batches = plan_batches(costs, options.batch_seconds, batch_size, extractor.batch_cost,
                           extractor.equal_lengths_only)

    def run_batch(indices: List[int]) -> None:
        with forward_context(options.precision, options.device):
            results = extractor.forward([items[i] for i in indices])
        check_finite(options.precision, results)
        for i, array in zip(indices, results):
            outputs[i] = array

    if forward is None:
        for indices in batches:
            run_batch(indices)
            bar.update(len(indices))
        return outputs
    # Longest first, so the workers end the window together rather than one waiting on the
    # longest batch; the order of the forward passes changes no output.
    running = {forward.submit(run_batch, indices): len(indices) for indices in reversed(batches)}
    try:
        for done in as_completed(running):
            done.result()
            bar.update(running[done])
    finally:
        for future in running:
            future.cancel()
    return outputs
