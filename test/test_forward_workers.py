"""A job's cores as forward passes at once (``EngineOptions.compute_workers``): each output is
what one thread gives it, bit for bit, and the state a patched model reads about its batch
(true lengths) is kept per thread, so passes running together never read each other's."""

import threading

import numpy as np
import pytest
import torch

from build_hf_models import build_w2v_bert, build_whisper, build_xvector
from build_speechbrain_model import build as build_speechbrain
from build_ssl_model import build as build_ssl
from speechdump import engine
from speechdump.extractors import load_extractor
from speechdump.extractors.base import Extractor

# Same process, batches and thread count (one per pass): bit for bit under any kernels.
pytestmark = pytest.mark.kernels


@pytest.fixture
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overlapping(extractor):
    """Wraps ``extractor.forward`` to count the passes that run at once; returns the record."""
    record = {"running": 0, "most": 0}
    lock = threading.Lock()
    forward = extractor.forward

    def counted(batch):
        with lock:
            record["running"] += 1
            record["most"] = max(record["most"], record["running"])
        try:
            return forward(batch)
        finally:
            with lock:
                record["running"] -= 1

    extractor.forward = counted
    return record


def outputs(extractor, utterances, workers, batch_size):
    out = {}
    order = []

    def write(utt_id, array):
        order.append(utt_id)
        out[utt_id] = array

    engine.run(utterances, extractor, write,
               engine.EngineOptions(batch_seconds=300.0, batch_size=batch_size,
                                    compute_workers=workers, progress=False))
    assert order == [u.utt_id for u in utterances]  # input order, whatever finished first
    return out


BUILDERS = {
    # padded batches: the group norm's lengths are kept per thread
    "xvector": lambda dest: build_xvector(dest, "wavlm", "group"),
    "speechbrain": lambda dest: build_speechbrain(dest, channels=[64, 64, 64, 64, 192]),
    "ssl": lambda dest: build_ssl(dest, "hubert", "group"),
    "whisper": build_whisper,
    "w2v_bert": build_w2v_bert,
}


@pytest.mark.parametrize("toolkit", sorted(BUILDERS))
def test_forward_workers_give_what_one_thread_gives_bit_for_bit(
        toolkit, utterances, tmp_path, one_torch_thread):
    extractor = load_extractor(toolkit, str(BUILDERS[toolkit](tmp_path / toolkit)), "cpu")
    assert extractor.concurrent_forward
    # Small batches: a window holds several, so the workers run padded batches together.
    alone = outputs(extractor, utterances, 1, batch_size=3)
    record = overlapping(extractor)
    together = outputs(extractor, utterances, 3, batch_size=3)
    assert record["most"] >= 2, "the forward passes never overlapped"
    assert together.keys() == alone.keys()
    for utt_id, output in alone.items():
        streams = output if isinstance(output, dict) else {"": output}
        got = together[utt_id] if isinstance(output, dict) else {"": together[utt_id]}
        assert got.keys() == streams.keys()
        for name, array in streams.items():
            np.testing.assert_array_equal(got[name], array, err_msg=f"{utt_id} {name}")


class _Stateful(Extractor):
    """Keeps its batch on the instance, as a plugin may: it must never run twice at once."""

    sample_rate = 16000

    def prepare(self, wave):
        return wave

    def cost(self, wave):
        return len(wave) / self.sample_rate

    def forward(self, batch):
        self.batch = batch
        return [np.array([len(w)], dtype=np.float32) for w in self.batch]


def test_an_extractor_that_does_not_declare_it_never_runs_two_passes_at_once(utterances):
    extractor = _Stateful()
    assert not extractor.concurrent_forward
    record = overlapping(extractor)
    out = outputs(extractor, utterances, 4, batch_size=1)
    assert record["most"] == 1
    assert len(out) == len(utterances)
