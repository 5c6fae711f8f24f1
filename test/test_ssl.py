"""Fidelity of the SSL extractor to transformers' own single-utterance forward pass.

Small random-init models of the real architectures (test/build_ssl_model.py), loaded with
``AutoModel`` / ``AutoFeatureExtractor``. The reference runs ``model(**feature_extractor(wave),
output_hidden_states=True)`` on one utterance at a time, on the very waveform speechdump decodes
and resamples (16 kHz), so only batching, padding and trimming differ.
"""

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import logging as hf_logging

from build_ssl_model import build
from conftest import SAMPLES, engine_outputs
from speechdump import engine
from speechdump.audio import UtteranceError
from speechdump.data import Utterance, read_table
from speechdump.extractors import load_extractor
from speechdump.extractors.ssl import arrays_of
from speechdump.job import run_job

hf_logging.disable_progress_bar()

# (kind, norm): the base layout (group norm) and the large layout (layer norm) of each.
MODELS = [("hubert", "group"), ("wav2vec2", "layer"), ("wavlm", "group"), ("wavlm", "layer"),
          ("data2vec", "layer")]
RATE = 16000
WINDOW, HOP = 2.0, 1.5  # seconds


def batching(extractor):
    """The extractor with the CPU cap lifted (batching is what these tests are about), and a
    record of the input lengths of every forward pass."""
    assert extractor.max_batch_size == 1  # on CPU utterances go alone by default...
    extractor.max_batch_size = None
    calls = []
    encode = extractor._encode

    def recording(inputs):
        calls.append([len(x) for x in inputs])
        return encode(inputs)

    extractor._encode = recording
    return calls


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: "-".join(m))
def model(request, tmp_path_factory):
    kind, norm = request.param
    return f"{kind}-{norm}", str(build(tmp_path_factory.mktemp("ssl") / kind, kind, norm))


@pytest.fixture(scope="module")
def hf(model):
    return (AutoModel.from_pretrained(model[1]).eval(),
            AutoFeatureExtractor.from_pretrained(model[1]))


def single(hf, wave):
    """Every hidden state of one input, alone: [layer][frames, dim]."""
    net, fe = hf
    with torch.inference_mode():
        inputs = fe(wave, sampling_rate=RATE, return_tensors="pt")
        return [h[0].numpy() for h in net(**inputs, output_hidden_states=True).hidden_states]


@pytest.fixture(scope="module")
def reference(hf, waves):
    return {utt: single(hf, wave) for utt, wave in waves.items()}


@pytest.fixture(scope="module")
def runs(model, utterances):
    """batch_seconds -> {utt: {stream: array}}, every layer, frames; plus the forward calls."""
    extractor = load_extractor("ssl", model[1])
    calls = batching(extractor)
    out = {seconds: engine_outputs(extractor, utterances, seconds) for seconds in (1, 300)}
    return out, calls, extractor


@pytest.mark.kernels
def test_every_layer_matches_the_model_on_one_utterance(model, hf, runs, reference, waves):
    out, calls, extractor = runs
    net = hf[0]
    assert len(reference) == 26
    assert extractor.frame_level and not extractor.equal_lengths_only
    # The 300 s run put utterances of different lengths into padded batches.
    assert any(len(set(lengths)) > 1 for lengths in calls)
    assert [s.name for s in extractor.streams] == \
        [f"layer{n}" for n in range(net.config.num_hidden_layers + 1)]
    worst = {}
    for seconds in (1, 300):
        worst[seconds] = 0.0
        for utt, states in reference.items():
            frames = int(net._get_feat_extract_output_lengths(torch.tensor(len(waves[utt]))))
            assert len(states) == len(out[seconds][utt])
            for n, expected in enumerate(states):
                got = out[seconds][utt][f"layer{n}"]
                assert got.dtype == np.float32
                assert got.shape == expected.shape == (frames, net.config.hidden_size), utt
                worst[seconds] = max(worst[seconds], float(np.abs(got - expected).max()))
    scale = max(float(np.abs(s).max()) for states in reference.values() for s in states)
    print(f"\n{model[0]}: max abs difference to the model on one utterance, over all layers and "
          f"26 utterances: batch_seconds=1 {worst[1]:.1e}, batch_seconds=300 {worst[300]:.1e} "
          f"(hidden states up to {scale:.1f})")
    assert worst[300] <= 1e-4 and worst[1] <= 1e-4


@pytest.mark.kernels
def test_batch_size_does_not_change_outputs(model, runs):
    out = runs[0]
    worst_abs = worst_rel = 0.0
    for utt, streams in out[300].items():
        for name, array in streams.items():
            diff = float(np.abs(out[1][utt][name] - array).max())
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / float(np.abs(array).max()))
    print(f"\n{model[0]}: batch_seconds=1 vs 300: max abs difference {worst_abs:.1e}, "
          f"relative to the layer's max |h| {worst_rel:.1e}")
    # Relative to each layer's scale, as a random-init model's scale is arbitrary.
    assert worst_rel <= 1e-5


def test_outputs_cross_to_numpy_as_float32_arrays_of_their_own():
    """Outputs leave the device one item at a time; each array keeps its values and shape, and
    none shares memory with the model's tensors or another item's arrays."""
    hidden = torch.randn(3, 7, 4, dtype=torch.float16)  # a padded batch, half precision
    items = [{"layer0": hidden[0, :5], "layer1": hidden[0, :5].mean(0)},
             {"layer0": hidden[1, :7], "layer1": hidden[1, :7].mean(0)},
             {"layer0": hidden[2, :2], "layer1": hidden[2, :2].mean(0)}]
    outputs = arrays_of(items)
    for item, out in zip(items, outputs):
        assert out.keys() == item.keys()
        for name, tensor in item.items():
            assert out[name].dtype == np.float32 and out[name].shape == tuple(tensor.shape)
            np.testing.assert_array_equal(out[name], tensor.float().numpy())
    outputs[0]["layer0"][:] = 0  # a writer that scribbles on its array changes nothing else
    assert torch.count_nonzero(hidden[0, :5]) > 0
    np.testing.assert_array_equal(outputs[1]["layer0"], hidden[1, :7].float().numpy())
    assert not np.shares_memory(outputs[0]["layer0"], outputs[1]["layer0"])


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
def test_plain_transformers_padding_is_exact_only_for_layer_norm_models(model, hf, waves,
                                                                        reference):
    """Why the extractor patches group norm and data2vec (a measurement, kept as a check)."""
    net, fe = hf
    utts = sorted(waves)[::3]
    inputs = fe([waves[u] for u in utts], sampling_rate=RATE, padding=True,
                return_attention_mask=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = net(**inputs, output_hidden_states=True).hidden_states
    frames = net._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
    worst = max(float(np.abs(h[i, :frames[i]].numpy() - reference[u][n]).max())
                for n, h in enumerate(hidden) for i, u in enumerate(utts))
    print(f"\n{model[0]}: transformers on a zero-padded batch with its attention mask: max abs "
          f"difference {worst:.1e}")
    if model[0] in ("hubert-layer", "wav2vec2-layer", "wavlm-layer"):
        assert worst <= 1e-4
    else:  # group norm over the padded time axis; data2vec's stacked positional convolutions
        assert worst > 1e-2


@pytest.mark.kernels
@pytest.mark.parametrize("pool", ["mean", "last"])
def test_pooling_matches_the_pooled_reference(model, utterances, reference, pool):
    # Layers 0 and 2 of 4: the extractor runs only the first 3 transformer layers.
    extractor = load_extractor("ssl", model[1], layers="0,2", pool=pool)
    batching(extractor)
    assert [s.name for s in extractor.streams] == ["layer0", "layer2"]
    assert not extractor.frame_level
    assert len(extractor.model.encoder.layers) == 3
    out = engine_outputs(extractor, utterances)
    worst = 0.0
    for utt, states in reference.items():
        assert sorted(out[utt]) == ["layer0", "layer2"]
        for n in (0, 2):
            expected = states[n].mean(axis=0) if pool == "mean" else states[n][-1]
            got = out[utt][f"layer{n}"]
            assert got.shape == expected.shape and got.dtype == np.float32
            worst = max(worst, float(np.abs(got - expected).max()))
    print(f"\n{model[0]}, pool {pool}: max abs difference {worst:.1e}")
    assert worst <= 1e-4


def expected_windows(n):
    """(start, size) in samples: every HOP s while a whole window fits, then one window that
    ends where the audio ends; audio no longer than a window is one window."""
    size, hop = int(WINDOW * RATE), int(HOP * RATE)
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n - size + 1, hop))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [(s, size) for s in starts]


@pytest.mark.kernels
def test_windows_match_each_window_alone(model, hf, utterances, waves):
    # Windows are mean-pooled; last-frame pooling checked on two models. (--pool none stitches
    # the windows' frames instead: test/test_windows.py.)
    pools = ["mean", "last"] if model[0] in ("hubert-group", "wav2vec2-layer") else ["mean"]
    for pool in pools:
        extractor = load_extractor("ssl", model[1], layers="1,4", pool=pool,
                                   window_seconds=WINDOW, hop_seconds=HOP)
        calls = batching(extractor)
        assert [s.name for s in extractor.streams] == ["layer1", "layer4", "times"]
        assert extractor.frame_level
        out = engine_outputs(extractor, utterances)
        worst, count = 0.0, 0
        for utt, wave in waves.items():
            windows = expected_windows(len(wave))
            times = np.array([(s / RATE, (s + size) / RATE) for s, size in windows], np.float32)
            np.testing.assert_array_equal(out[utt]["times"], times)
            assert times[-1, 1] == np.float32(len(wave) / RATE)  # the audio's end is covered
            for k, (start, size) in enumerate(windows):
                states = single(hf, wave[start:start + size])  # the window alone
                for n in (1, 4):
                    expected = states[n][-1] if pool == "last" else states[n].mean(axis=0)
                    got = out[utt][f"layer{n}"]
                    assert got.shape == (len(windows), hf[0].config.hidden_size)
                    worst = max(worst, float(np.abs(got[k] - expected).max()))
                count += 1
        assert any(len(w) <= WINDOW * RATE for w in waves.values())  # one-window utterances
        assert any(len(expected_windows(len(w))) > 2 for w in waves.values())
        # Windows go through the model in batches, not one forward pass each.
        assert sum(len(c) for c in calls) == count and len(calls) < count / 4
        print(f"\n{model[0]}: {count} windows of {WINDOW} s every {HOP} s in {len(calls)} "
              f"forward passes, pool {pool}: max abs difference to each window alone "
              f"{worst:.1e}")
        assert worst <= 1e-4


def test_window_streams_become_files_with_window_counts(tmp_path, utterances, waves):
    path = str(build(tmp_path / "model", "hubert", "group"))
    extractor = load_extractor("ssl", path, layers="2", pool="mean", window_seconds=WINDOW,
                               hop_seconds=HOP)
    some = utterances[:4]
    run_job(some, extractor, "hub", str(tmp_path / "split"), 1,
            engine.EngineOptions(progress=False), dtype="float16")
    counts = read_table(tmp_path / "split" / "utt2num_frames.1")
    for utt in some:
        assert int(counts[utt.utt_id]) == len(expected_windows(len(waves[utt.utt_id])))
    for stream, dim in (("layer2", 96), ("times", 2)):
        arrays = dict(kaldiio.load_scp(str(tmp_path / "split" / f"hub_{stream}.1.scp")))
        assert {u.utt_id: arrays[u.utt_id].shape for u in some} == {
            u.utt_id: (int(counts[u.utt_id]), dim) for u in some}
        # --dtype float16 stores the features; time stamps stay exact float32.
        assert {a.dtype for a in arrays.values()} == {
            np.dtype(np.float32 if stream == "times" else np.float16)}


def test_layer_and_option_errors_are_clear(tmp_path):
    path = str(build(tmp_path / "model", "wav2vec2", "layer"))
    with pytest.raises(ValueError, match=r"no hidden state 5, 9; this model has 4 transformer "
                                         r"layers, so hidden states 0\.\.4"):
        load_extractor("ssl", path, layers="2,5,9")
    with pytest.raises(ValueError, match="expected 'all' or hidden-state numbers"):
        load_extractor("ssl", path, layers="six")
    with pytest.raises(ValueError, match="expected 'all' or hidden-state numbers"):
        load_extractor("ssl", path, layers="-1")
    with pytest.raises(ValueError, match="--pool 'max': choose from none, mean, last"):
        load_extractor("ssl", path, pool="max")
    with pytest.raises(ValueError, match="--hop_seconds needs --window_seconds"):
        load_extractor("ssl", path, hop_seconds=1.0)
    with pytest.raises(ValueError, match="at least 0.025 s per window"):
        load_extractor("ssl", path, window_seconds=0.02)
    with pytest.raises(ValueError, match="ssl needs --model"):
        load_extractor("ssl")
    with pytest.raises(ValueError, match="not a directory"):
        load_extractor("ssl", "./no/such/model")
    assert [s.name for s in load_extractor("ssl", path, layers="3-4").streams] == \
        ["layer3", "layer4"]


def test_input_shorter_than_the_receptive_field_is_refused(tmp_path):
    path = str(build(tmp_path / "model", "hubert", "group"))
    extractor = load_extractor("ssl", path, layers="0,4")
    assert extractor.min_seconds == 400 / RATE  # the conv stack's receptive field
    samples, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="float32")
    assert rate == RATE
    short, edge = tmp_path / "blip.wav", tmp_path / "edge.wav"
    soundfile.write(short, samples[8000:8000 + 320], rate)
    soundfile.write(edge, samples[8000:8000 + 400], rate)
    with pytest.raises(UtteranceError, match="'blip'.*too short: 0.020 s.*at least 0.025 s"):
        engine.run([Utterance("blip", str(short))], extractor, lambda *_: None,
                   engine.EngineOptions(progress=False))
    out = engine_outputs(extractor, [Utterance("edge", str(edge))])
    hf = (AutoModel.from_pretrained(path).eval(), AutoFeatureExtractor.from_pretrained(path))
    expected = single(hf, samples[8000:8000 + 400])
    assert out["edge"]["layer4"].shape == (1, 96)
    assert np.abs(out["edge"]["layer4"] - expected[4]).max() <= 1e-4
