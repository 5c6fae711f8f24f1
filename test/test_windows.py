"""Windows for the frame-level encoders (speechdump.windows): causal fine-stride windows for ssl,
whisper and w2v_bert, and stitched frames of long audio (``--pool none`` with windows).

Small random-init models (test/build_ssl_model.py, test/build_hf_models.py) on real speech. The
references run each model's own API (transformers model + its feature extractor) on one
window's samples alone, and stitch by the documented rule written out here independently of
the extractors: each frame from the window in which it is farthest from an edge (ties: the
later window).
"""

import math

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import logging as hf_logging

from build_hf_models import build_w2v_bert, build_whisper
from build_ssl_model import build
from conftest import engine_outputs, stitch_frames
from speechdump import engine, windows
from speechdump.data import Utterance, read_table
from speechdump.errors import OptionError
from speechdump.extractors import check, load_extractor
from speechdump.job import run_job

hf_logging.disable_progress_bar()

RATE = 16000
W, H = 1.5, 0.25  # causal windows: seconds of context, seconds between stamps
CUT = 2.0  # seconds: the audio after it is replaced by noise
TOOLKITS = ("ssl", "whisper", "w2v_bert")


# -- the arithmetic ----------------------------------------------------------------------------

def test_causal_stamps_cover_the_audio_and_never_look_ahead():
    starts, ends = windows.causal_windows(1050, 400, 100)
    # Stamps every hop; the final partial hop (1000 -> 1050) gets one more stamp at the end.
    assert ends.tolist() == [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1050]
    assert starts.tolist() == [0, 0, 0, 0, 100, 200, 300, 400, 500, 600, 650]
    starts, ends = windows.causal_windows(1000, 400, 100)  # a whole number of hops: no extra
    assert ends[-1] == 1000 and len(ends) == 10
    starts, ends = windows.causal_windows(70, 400, 100)  # shorter than a hop: one stamp, its end
    assert starts.tolist() == [0] and ends.tolist() == [70]
    times = windows.causal(np.zeros(1050, np.float32), 400, 100).times(100)
    assert times.dtype == np.float32 and times[0].tolist() == [0.0, 1.0]
    assert times[-1].tolist() == [6.5, 10.5]


def test_sliding_windows_and_stitching_cover_every_frame_once():
    assert windows.window_starts(900, 1000, 300) == [0]
    assert windows.window_starts(2000, 1000, 500) == [0, 500, 1000]
    assert windows.window_starts(2100, 1000, 500) == [0, 500, 1000, 1100]
    assert windows.window_starts(2100, 1000, 500, unit=320) == [0, 500, 1000, 1280]
    starts, frames = [0, 3, 6, 8], [5, 5, 5, 4]  # frames 0..11, overlaps of 2, 2 and 3 frames
    bounds = windows.stitch_bounds(starts, frames)
    taken = [s + f for s, b in zip(starts, bounds) for f in b]
    assert taken == list(range(12))
    # Overlap [3, 5): first half to the earlier window; [8, 11) of 3: 1 to the earlier, 2 later.
    assert [(s + b.start, s + b.stop) for s, b in zip(starts, bounds)] == \
        [(0, 4), (4, 7), (7, 9), (9, 12)]


def test_windows_run_in_bounded_sorted_passes():
    """encode_windows slices each window only for its pass, and a pass never exceeds its
    padded-seconds budget (here 4 s of 16 kHz audio)."""
    wave = np.arange(16000 * 30, dtype=np.float32)
    item = windows.causal(wave, 16000, 1600)  # 300 stamps, 1 s of context, every 0.1 s
    passes, seen = [], {}

    def encode(waves):
        passes.append([len(w) for w in waves])
        return [{0: torch.from_numpy(w[-1:, None].copy())} for w in waves]

    def keep(i, k, states):
        seen[k] = float(states[0][-1, 0])

    windows.encode_windows([item], encode, keep, 16000, max_seconds=4.0)
    assert sorted(seen) == list(range(len(item))) and len(item) == 300
    assert all(seen[k] == item.ends[k] - 1 for k in seen)  # each window ends at its stamp
    assert all(max(p) * len(p) <= 4 * 16000 for p in passes)
    # Length-sorted: the 9 short first windows, then passes of 4 whole windows.
    assert sum(len(p) == 4 and set(p) == {16000} for p in passes) >= 72


# -- the models --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("window_models")
    return {"ssl": str(build(root / "hubert", "hubert", "group")),
            "whisper": str(build_whisper(root / "whisper")),
            "w2v_bert": str(build_w2v_bert(root / "w2v_bert"))}


@pytest.fixture(scope="module")
def hf(models):
    return {name: (AutoModel.from_pretrained(path).eval(),
                   AutoFeatureExtractor.from_pretrained(path)) for name, path in models.items()}


def alone(toolkit, hf, wave):
    """Every hidden state of one input alone, through the model's own API, trimmed to its true
    frames: [layer][frames, dim]."""
    net, fe = hf[toolkit]
    with torch.inference_mode():
        if toolkit == "whisper":
            inputs = fe(wave, sampling_rate=RATE, return_tensors="pt", return_attention_mask=True)
            frames = int(net._get_feat_extract_output_lengths(inputs.attention_mask.sum()))
            hidden = net.encoder(inputs.input_features, output_hidden_states=True).hidden_states
            return [h[0, :frames].numpy() for h in hidden]
        inputs = fe(wave, sampling_rate=RATE, return_tensors="pt")
        hidden = net(**inputs, output_hidden_states=True).hidden_states
        if toolkit == "w2v_bert":
            return [h[0, :int(inputs.attention_mask.sum())].numpy() for h in hidden]
        return [h[0].numpy() for h in hidden]


@pytest.fixture(scope="module")
def speech(waves, tmp_path_factory):
    """4 s of real speech (JFK), its copy with everything after CUT s replaced by noise, and a
    12.3 s recording (two clips concatenated): {utt: (path, waveform)}."""
    root = tmp_path_factory.mktemp("window_audio")
    clean = waves["jfk-inaugural1961"][:4 * RATE].copy()
    noisy = clean.copy()
    rng = np.random.default_rng(0)
    noisy[int(CUT * RATE):] = 0.1 * rng.standard_normal(len(noisy) - int(CUT * RATE))
    long = np.concatenate([waves["jfk-inaugural1961"], waves["arctic-aew-a0001"]])[
        :int(12.3 * RATE)]
    out = {}
    for utt, wave in (("clean", clean), ("noisy", noisy), ("long", long)):
        path = root / f"{utt}.wav"
        soundfile.write(path, wave, RATE, subtype="FLOAT")
        out[utt] = (str(path), wave.astype(np.float32))
    return out


@pytest.mark.kernels
@pytest.mark.parametrize("toolkit", TOOLKITS)
def test_causal_windows_equal_each_window_alone_and_never_see_later_audio(toolkit, models, hf,
                                                                         speech):
    layers = {"ssl": (1, 4), "whisper": (0, 3), "w2v_bert": (1, 3)}[toolkit]
    for pool in ("last", "mean"):
        extractor = load_extractor(toolkit, models[toolkit], layers=",".join(map(str, layers)),
                                   pool=pool, window_seconds=W, hop_seconds=H, causal=True)
        assert [s.name for s in extractor.streams][-1] == "times"
        out = engine_outputs(extractor, [Utterance(u, speech[u][0]) for u in ("clean", "noisy")])
        wave = speech["clean"][1]
        # Stamps every H up to the end (4 s: a whole number of hops), context [t - W, t].
        ends = np.arange(1, int(4 / H) + 1) * H
        times = np.stack([np.maximum(ends - W, 0), ends], axis=1).astype(np.float32)
        np.testing.assert_allclose(out["clean"]["times"], times, atol=1e-6)
        assert out["clean"]["times"][0].tolist() == [0.0, H]  # the first windows are short

        # Each window equals the model on its samples alone.
        worst = 0.0
        for k, (start, end) in enumerate(np.round(times * RATE).astype(int)):
            states = alone(toolkit, hf, wave[start:end])
            for n in layers:
                want = states[n][-1] if pool == "last" else states[n].mean(axis=0)
                worst = max(worst, float(np.abs(out["clean"][f"layer{n}"][k] - want).max()))
        print(f"\n{toolkit}, pool {pool}: {len(times)} causal windows, max abs difference to "
              f"each window alone {worst:.1e}")
        assert worst <= 1e-4

        # Noise after CUT s changes no window whose stamp is <= CUT, and every later one.
        before = ends <= CUT + 1e-9
        for n in layers:
            diff = np.abs(out["clean"][f"layer{n}"] - out["noisy"][f"layer{n}"]).max(axis=1)
            assert diff[before].max() <= 1e-5, (n, diff[before])
            assert diff[~before].min() > 1e-3, (n, diff[~before])


def test_causal_windows_of_equal_length_share_forward_passes(models, speech):
    extractor = load_extractor("ssl", models["ssl"], layers="2", pool="last", window_seconds=W,
                               hop_seconds=H, causal=True)
    passes = []
    encode = extractor._encode

    def recording(inputs):
        passes.append([len(x) for x in inputs])
        return encode(inputs)

    extractor._encode = recording
    wave = speech["long"][1]
    out = extractor.forward([extractor.prepare(wave)])[0]
    # 12.3 s: stamps every 0.25 s up to 12.25, then the final partial hop at 12.3 s.
    assert len(out["layer2"]) == 49 + 1
    assert out["times"][-1].tolist() == pytest.approx([12.3 - W, 12.3])
    # 50 windows of at most 1.5 s: 75 padded seconds, two passes of at most 60 s (the short
    # first windows padded with the first whole ones: exact, as padded utterances are).
    assert sorted(len(p) for p in passes) == [10, 40]
    assert sorted(x for p in passes for x in p) == sorted(
        int(round((e - s) * RATE)) for s, e in out["times"])


# -- stitched frames -----------------------------------------------------------------------------

def stitched_reference(toolkit, hf, wave, window, hop):
    """Frames of ``wave`` from windows of ``window`` samples every ``hop`` (multiples of 320),
    the last starting on the 320-sample grid where it reaches the end; each frame from the
    window in which it is farthest from an edge (ties: the later window)."""
    last = math.ceil((len(wave) - window) / 320) * 320
    starts = list(range(0, last, hop)) + [last]
    states = [alone(toolkit, hf, wave[s:s + window]) for s in starts]
    out = stitch_frames(states, starts, len(alone(toolkit, hf, wave)[0]))
    return out, len(starts)


@pytest.mark.kernels
@pytest.mark.parametrize("toolkit", ["ssl", "w2v_bert"])
def test_stitched_frames_follow_the_rule_and_the_whole_frame_count(toolkit, models, hf, speech):
    wave = speech["long"][1]
    extractor = load_extractor(toolkit, models[toolkit], window_seconds=4, hop_seconds=3)
    assert [s.name for s in extractor.streams] == [f"layer{n}" for n in extractor.layers]
    assert extractor.streams[0].frame_shift == 0.02
    out = extractor.forward([extractor.prepare(wave)])[0]
    whole = alone(toolkit, hf, wave)
    formula = (len(wave) - 400) // 320 + 1 if toolkit == "ssl" else \
        (1 + (len(wave) - 400) // 160) // 2
    assert len(whole[0]) == formula
    expected, count = stitched_reference(toolkit, hf, wave, 4 * RATE, 3 * RATE)
    assert count == 4  # windows at 0, 3, 6 and 8.3 s
    worst = 0.0
    for n in extractor.layers:
        assert out[f"layer{n}"].shape == (formula, whole[n].shape[1])
        worst = max(worst, float(np.abs(out[f"layer{n}"] - expected[n]).max()))
    assert worst <= 1e-4
    # Audio no longer than a window: one window, exactly the plain forward.
    short = speech["clean"][1]
    plain = load_extractor(toolkit, models[toolkit])
    one = extractor.forward([extractor.prepare(short)])[0]
    ref = plain.forward([plain.prepare(short)])[0]
    assert sorted(one) == sorted(ref)
    for name in ref:
        np.testing.assert_array_equal(one[name], ref[name])


def test_stitched_frames_become_files_with_their_frame_counts(tmp_path, models, speech):
    extractor = load_extractor("ssl", models["ssl"], layers="2", window_seconds=4,
                               hop_seconds=3)
    utts = [Utterance(u, speech[u][0]) for u in ("clean", "long")]
    run_job(utts, extractor, "hub", str(tmp_path / "split"), 1,
            engine.EngineOptions(progress=False))
    counts = read_table(tmp_path / "split" / "utt2num_frames.1")
    assert {u: int(c) for u, c in counts.items()} == {
        u.utt_id: (len(speech[u.utt_id][1]) - 400) // 320 + 1 for u in utts}
    arrays = dict(kaldiio.load_scp(str(tmp_path / "split" / "hub_layer2.1.scp")))
    assert {u: a.shape for u, a in arrays.items()} == {u: (int(c), 96) for u, c in
                                                       counts.items()}
    assert not (tmp_path / "split" / "hub_times.1.scp").exists()


# -- pre-flight --------------------------------------------------------------------------------

@pytest.mark.parametrize("toolkit", TOOLKITS)
def test_window_options_that_do_not_fit_are_refused_before_loading(toolkit, models):
    model = models[toolkit]
    with pytest.raises(OptionError, match="--causal true needs --window_seconds"):
        check(toolkit, model, {"causal": "true", "pool": "last"})
    with pytest.raises(OptionError, match="--pool none does not apply"):
        check(toolkit, model, {"causal": "true", "window_seconds": "2", "hop_seconds": "0.1"})
    _, streams = check(toolkit, model, {"causal": "true", "window_seconds": "2",
                                        "hop_seconds": "0.1", "pool": "mean", "layers": "1"})
    assert [(s.name, s.shape) for s in streams] == [("layer1", "frames"), ("times", "frames")]
    assert streams == [s.__class__(**{**s.to_record(), "frame_shift": None})
                       for s in load_extractor(toolkit, model, causal="true", window_seconds=2,
                                               hop_seconds=0.1, pool="mean", layers="1").streams]
    if toolkit == "whisper":
        with pytest.raises(OptionError, match="--window_seconds 31.0: at most 30 s"):
            check(toolkit, model, {"causal": "true", "window_seconds": "31", "pool": "last"})
        with pytest.raises(OptionError, match="with --causal true only"):
            check(toolkit, model, {"window_seconds": "10"})
    else:
        with pytest.raises(OptionError, match="must overlap or touch"):
            check(toolkit, model, {"window_seconds": "2", "hop_seconds": "3"})
        _, streams = check(toolkit, model, {"window_seconds": "4", "layers": "0"})
        assert [(s.name, s.shape) for s in streams] == [("layer0", "frames")]  # no times
    with pytest.raises(OptionError, match="first window holds only the first H s"):
        load_extractor(toolkit, model, causal=True, window_seconds=2, pool="last",
                       hop_seconds=1e-5 if toolkit == "whisper" else 0.01)
