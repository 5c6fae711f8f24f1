"""The engine's windows: bounded by utterances and by seconds of audio, output unchanged."""

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

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


def test_a_seconds_bound_changes_the_windows_not_the_output(sample_utterances, monkeypatch):
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    extractor = load_extractor("fbank")
    whole = {}
    engine.run(utterances, extractor, whole.__setitem__,
               engine.EngineOptions(progress=False))

    windows = []
    forward_window = engine._forward_window

    def recording(extractor, items, options, bar):
        windows.append([extractor.cost(item) for item in items])
        return forward_window(extractor, items, options, bar)

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

    def counting(extractor, items, options, bar):
        gc.collect()  # every output so far belongs to a window already written
        alive_from_earlier.append(sum(ref() is not None for ref in extractor.made))
        return forward_window(extractor, items, options, bar)

    monkeypatch.setattr(engine, "_forward_window", counting)
    utterances = [Utterance(utt, path) for utt, path in sample_utterances]
    engine.run(utterances, extractor, lambda utt_id, array: None,
               engine.EngineOptions(progress=False, sort_window=4))
    assert len(alive_from_earlier) == 7  # 26 utterances in windows of 4
    assert alive_from_earlier == [0] * 7


def test_loading_ahead_is_bounded_in_utterances_and_in_seconds():
    submitted = []

    def items(lengths):
        for i, seconds in enumerate(lengths):
            submitted.append(i)
            yield i, seconds

    def load(item):
        return item[0], None, item[1]

    def most_in_flight(lengths, max_items, max_seconds, after=0):
        submitted.clear()
        in_flight = []
        with ThreadPoolExecutor(2) as pool:
            for done, result in enumerate(engine._in_order(pool, load, items(lengths),
                                                           max_items, max_seconds), 1):
                assert result[0] == done - 1  # input order
                in_flight.append(len(submitted) - done)
        return max(in_flight[after:])

    # Short utterances: the count bounds what is ahead (as before seconds were counted).
    assert most_in_flight([3.0] * 200, max_items=16, max_seconds=1200.0) == 15
    # Ten-minute recordings: once the first have loaded, about 1200 s of them, not 16.
    assert most_in_flight([600.0] * 200, max_items=16, max_seconds=1200.0, after=16) <= 2
