"""Whisper encoder layers (--toolkit whisper) against transformers' own single-utterance API.

A small random-init ``WhisperModel`` (test/build_hf_models.py). The reference runs
``model.encoder(WhisperFeatureExtractor(wave).input_features, output_hidden_states=True)`` on
one utterance (or one 30 s window) at a time, on the waveform speechdump decodes, trims it to
the feature extractor's own attention mask through the model's length formula, and stitches
long audio by the documented rule, written out here independently of the extractor.
"""

import math

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import logging as hf_logging

from build_hf_models import build_whisper
from conftest import (SAMPLES, assert_equal_to_rounding, engine_outputs,
                      read_pairs, run_feats_stage, stitch_frames)
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance
from speechdump.errors import OptionError
from speechdump.extractors import check, load_extractor

hf_logging.disable_progress_bar()

RATE, WINDOW = 16000, 480000
LAYERS = (0, 2, 3)  # 3 = after the encoder's final layer norm (last_hidden_state)
REAL = ("arctic-aew-a0001", "jfk-inaugural1961", "vctk-p240-rtvc00000")  # 3.9, 11, 6 s; MP3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_whisper(tmp_path_factory.mktemp("whisper") / "model"))


@pytest.fixture(scope="module")
def hf(model):
    return AutoModel.from_pretrained(model).eval(), AutoFeatureExtractor.from_pretrained(model)


@pytest.fixture(scope="module")
def data(tmp_path_factory, waves):
    """A data dir of 3 real recordings, a 2 s cut of one, and a 45 s concatenation of several:
    (dir, {utt: waveform as speechdump decodes it})."""
    root = tmp_path_factory.mktemp("whisper_data")
    sources = dict(read_pairs(SAMPLES / "wav.scp"))
    paths = {utt: str(SAMPLES / sources[utt]) for utt in REAL}
    long = np.concatenate([waves[u] for u in sorted(waves)])[:45 * RATE]
    assert len(long) == 45 * RATE
    for utt, wave in (("cut-2s", waves["arctic-aew-a0001"][:2 * RATE]), ("long-45s", long)):
        paths[utt] = str(root / f"{utt}.wav")
        soundfile.write(paths[utt], wave, RATE, subtype="FLOAT")
    utts = sorted(paths)
    (root / "wav.scp").write_text("".join(f"{u} {paths[u]}\n" for u in utts))
    for name in ("utt2spk", "spk2utt"):
        (root / name).write_text("".join(f"{u} {u}\n" for u in utts))
    (root / "text").write_text("".join(f"{u} x\n" for u in utts))
    cache = ResamplerCache()
    return root, {u: load_audio(Utterance(u, paths[u]), RATE, cache) for u in utts}


def alone(hf, wave):
    """Every hidden state of one input of at most 30 s, trimmed: [layer][frames, dim]."""
    net, fe = hf
    inputs = fe(wave, sampling_rate=RATE, return_tensors="pt", return_attention_mask=True)
    frames = int(net._get_feat_extract_output_lengths(inputs.attention_mask.sum()))
    assert frames == math.ceil(len(wave) / 320)  # the formula of the docstring
    with torch.inference_mode():
        hidden = net.encoder(inputs.input_features, output_hidden_states=True).hidden_states
    return [h[0, :frames].numpy() for h in hidden]


def reference(hf, wave, hop_seconds=20.0):
    """Frames of any length: 30 s windows every hop (the last ending at the audio's end, on the
    20 ms grid), each frame from the window in which it is farthest from an edge (ties: the
    later window)."""
    if len(wave) <= WINDOW:
        return alone(hf, wave)
    hop = round(hop_seconds * RATE / 320) * 320
    last = math.ceil((len(wave) - WINDOW) / 320) * 320
    starts = list(range(0, last, hop)) + [last]
    windows = [alone(hf, wave[s:s + WINDOW]) for s in starts]
    return stitch_frames(windows, starts, math.ceil(len(wave) / 320))


def max_diff(output, expected):
    return max(float(np.abs(output[f"layer{n}"] - expected[n]).max()) for n in LAYERS)


@pytest.mark.kernels
def test_stage_equals_the_model_alone_and_does_not_depend_on_nj(tmp_path, stage_env, hf, data):
    root, waves = data
    runs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        proc = run_feats_stage(["--toolkit", "whisper", "--model", hf[0].name_or_path,
                                "--extractor_opts", "--layers 0,2,3", "--nj", nj,
                                "--batch_seconds", 1000, "--batch_size", 64, root, out],
                               stage_env)
        assert f"{len(waves)} matrices of dimension 64" in proc.stdout
        runs[nj] = {n: dict(kaldiio.load_scp_sequential(str(out / f"feats_layer{n}.scp")))
                    for n in LAYERS}
        frames = {u: int(c) for u, c in read_pairs(out / "utt2num_frames")}
        assert frames == {u: math.ceil(len(w) / 320) for u, w in waves.items()}
    assert frames["cut-2s"] == 100 and frames["long-45s"] == 2250
    worst = 0.0
    for utt, wave in waves.items():
        expected = reference(hf, wave)
        worst = max(worst, max_diff({f"layer{n}": runs[3][n][utt] for n in LAYERS}, expected))
    assert worst <= 1e-4
    assert all(list(runs[1][n]) == list(runs[3][n]) == sorted(waves) for n in LAYERS)
    assert_equal_to_rounding({n: runs[3][n] for n in LAYERS}, {n: runs[1][n] for n in LAYERS},
                             "the jobs' sort windows follow the split, so --nj 3 stacks other "
                             "windows in a batch than --nj 1")


@pytest.mark.kernels
def test_stitching_with_three_windows_and_pooling(hf, data):
    root, waves = data
    utts = [Utterance(u, p) for u, p in read_pairs(root / "wav.scp")]
    frames = engine_outputs(load_extractor("whisper", hf[0].name_or_path, layers="0,2,3",
                                           hop_seconds=10), utts, batch_seconds=1000)
    expected = reference(hf, waves["long-45s"], hop_seconds=10)  # windows at 0, 10 and 15 s
    assert max_diff(frames["long-45s"], expected) <= 1e-4
    for pool in ("mean", "last"):
        pooled = engine_outputs(load_extractor("whisper", hf[0].name_or_path, layers="0,2,3",
                                               pool=pool), utts, batch_seconds=1000)
        for utt in ("cut-2s", "long-45s"):
            ref = reference(hf, waves[utt])
            want = [h.mean(axis=0) if pool == "mean" else h[-1] for h in ref]
            assert max_diff(pooled[utt], want) <= 1e-4


def test_options_are_checked_before_loading(hf):
    model = hf[0].name_or_path
    _, streams = check("whisper", model, {"layers": "1-2", "pool": "mean"})
    assert [(s.name, s.shape, s.dim) for s in streams] == [("layer1", "vector", 64),
                                                          ("layer2", "vector", 64)]
    with pytest.raises(OptionError, match="hidden states 0..3"):
        check("whisper", model, {"layers": "4"})
    with pytest.raises(OptionError, match="at most 30"):
        check("whisper", model, {"hop_seconds": "31"})


def test_weights_that_do_not_fit_and_other_layouts_are_refused(hf, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from speechdump.errors import ModelError

    broken = tmp_path / "broken"
    shutil.copytree(hf[0].name_or_path, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["encoder.layers.1.fc1.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"model.safetensors.*encoder.layers.1.fc1.weight"):
        load_extractor("whisper", str(broken))
    with pytest.raises(ModelError, match="is a whisper model"):
        check("xvector", hf[0].name_or_path, {})
    with pytest.raises(ModelError, match="is a whisper model"):
        check("w2v_bert", hf[0].name_or_path, {"layers": "all", "pool": "none"})
