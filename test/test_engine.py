"""The engine's windows: bounded by utterances and by seconds of audio, output unchanged."""

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from speechdump import engine
from speechdump.data import Utterance
from speechdump.extractors import load_extractor
from speechdump.extractors.base import Extractor


def test_windows_close_at_the_count_or_once_they_hold_the_seconds():
    results = [(f"u{i}", None, seconds) for i, seconds in enumerate([2, 2, 2, 9, 1, 1, 1, 1, 1])]
    windows = [[utt for utt, _, _ in w] for w in engine._windows(iter(results), 3, 5.0)]
    # 2+2+2 reaches 5 s at the third; 9 s alone is over; then 1+1+1 hits the count of 3.
    assert windows == [["u0", "u1", "u2"], ["u3"], ["u4", "u5", "u6"], ["u7", "u8"]]
    assert [len(w) for w in engine._windows(iter(results), 100, 1e9)] == [9]


@pytest.mark.kernels
def test_a_seconds_bound_changes_the_windows_not_the_output(sample_utterances, monkeypatch):
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    extractor = load_extractor("fbank")
    whole = {}
    engine.run(utterances, extractor, whole.__setitem__,
               engine.EngineOptions(progress=False))

    windows = []
    forward_window = engine._forward_window

    def recording(extractor, items, options, bar, forward):
        windows.append([extractor.cost(item) for item in items])
        return forward_window(extractor, items, options, bar, forward)

    monkeypatch.setattr(engine, "_forward_window", recording)
    order = []
    bounded = {}

    def write(utt_id, array):
        order.append(utt_id)
        bounded[utt_id] = array

    engine.run(utterances, extractor, write,
               engine.EngineOptions(progress=False, sort_window_seconds=12.0))
    assert order == [u.utt_id for u in utterances]  # input order, whatever the windows
    assert len(windows) > 5
    for costs in windows[:-1]:
        assert sum(costs) >= 12.0 - 0.05 and sum(costs[:-1]) < 12.0
    assert sum(len(w) for w in windows) == len(utterances)
    for utt_id, feats in whole.items():
        np.testing.assert_array_equal(bounded[utt_id], feats, err_msg=utt_id)


class _Lengths(Extractor):
    """Each utterance's output: a large array, so keeping old windows alive would show."""

    sample_rate = 16000

    def __init__(self):
        self.made = []  # weak references to every output given

    def prepare(self, wave):
        return len(wave)

    def cost(self, samples):
        return samples / self.sample_rate

    def forward(self, batch):
        outputs = [np.zeros(100_000, dtype=np.float32) for _ in batch]
        self.made += [weakref.ref(array) for array in outputs]
        return outputs


def test_a_written_window_is_released_before_the_next_one_runs(sample_utterances, monkeypatch):
    extractor = _Lengths()
    forward_window = engine._forward_window
    alive_from_earlier = []

    def counting(extractor, items, options, bar, forward):
        gc.collect()  # every output so far belongs to a window already written
        alive_from_earlier.append(sum(ref() is not None for ref in extractor.made))
        return forward_window(extractor, items, options, bar, forward)

    monkeypatch.setattr(engine, "_forward_window", counting)
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    engine.run(utterances, extractor, lambda utt_id, array: None,
               engine.EngineOptions(progress=False, sort_window=4))
    assert len(alive_from_earlier) == 7  # 26 utterances in windows of 4
    assert alive_from_earlier == [0] * 7


def _most_ahead(lengths, max_items, max_seconds, workers=2):
    """Runs ``engine._Prefetch`` over items of these lengths with a slow consumer; returns the
    most results and seconds ever loaded or loading and not yet done with: those ahead of the
    model and the one it holds."""
    lock = threading.Lock()
    taken = []
    started = []  # (item, seconds) in the order loads started
    most = [0, 0.0]

    def load(item):
        with lock:
            started.append(item)
            ahead = started[len(taken):]
            most[0] = max(most[0], len(ahead))
            most[1] = max(most[1], sum(seconds for _, seconds in ahead))
        time.sleep(0.001)
        return item[0], None, item[1]

    prefetch = engine._Prefetch(load, enumerate(lengths), workers, max_items, max_seconds)
    try:
        for result in prefetch:
            time.sleep(0.003)  # the model, slower than the loaders
            with lock:
                assert result[0] == len(taken)  # input order
                taken.append(result)
    finally:
        prefetch.close()
    assert len(taken) == len(lengths)
    return most


def test_loading_ahead_is_bounded_in_utterances_and_in_seconds():
    # Short utterances: the count bounds what is ahead (16, and the one the model holds).
    count, seconds = _most_ahead([3.0] * 200, max_items=16, max_seconds=1200.0)
    assert count == 17
    # Ten-minute recordings, from the very start: loads start while under 1200 s have loaded,
    # so at most 600 s loaded and 2 loading, and the one the model holds.
    count, seconds = _most_ahead([600.0] * 60, max_items=16, max_seconds=1200.0)
    assert count <= 4 and seconds <= 2400.0
    # Short utterances first, then hour-long ones: what has loaded bounds it, not a mean of
    # the first lengths (at 3 s each, 16 hour-long recordings would have been queued): at most
    # the 2 that started while under 1200 s had loaded, and the one the model holds.
    count, seconds = _most_ahead([3.0] * 4 + [3600.0] * 30, max_items=16, max_seconds=1200.0)
    assert count <= 6 and seconds <= 3 * 3600.0 + 4 * 3.0


def test_a_failed_load_stops_the_job_and_the_loaders():
    def load(item):
        if item == 5:
            raise RuntimeError("decoder crashed")
        return item, None, 1.0

    prefetch = engine._Prefetch(load, range(1000), 2, 16, 1e9)
    taken = []
    with pytest.raises(RuntimeError, match="decoder crashed"):
        try:
            for result in prefetch:
                taken.append(result[0])
        finally:
            prefetch.close()
    assert taken == [0, 1, 2, 3, 4]
    assert prefetch._pool._shutdown
