"""w2v-BERT 2.0 (--toolkit w2v_bert) against transformers' own single-utterance API.

A small random-init ``Wav2Vec2BertModel`` in the layout of facebook/w2v-bert-2.0
(test/build_hf_models.py). The reference runs ``model(**SeamlessM4TFeatureExtractor(wave),
output_hidden_states=True)`` on one utterance at a time (the waveform speechdump decodes) and
trims it to the feature extractor's own attention mask.
"""

import kaldiio
import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import logging as hf_logging

from build_hf_models import build_w2v_bert
from conftest import (assert_equal_to_rounding, engine_outputs, make_data_dir,
                      read_pairs, run_feats_stage)
from speechdump.extractors import load_extractor

hf_logging.disable_progress_bar()

RATE = 16000
SUBSET = {"arctic-aew-a0001", "jfk-inaugural1961", "ljspeech-lj-002-0020", "vctk-p225-003",
          "vctk-p226-008", "vctk-p238-165"}  # 16-48 kHz, stereo; 1.5-11 s
LAYERS = range(4)
# For the engine: 10 recordings, 1.5-11 s, 16-48 kHz, WAV/FLAC/MP3.
ENGINE = SUBSET | {"arctic-aew-a0003", "ls-1688-142285-0003", "ls-6829-rtvc00000",
                   "vctk-p301-102"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_w2v_bert(tmp_path_factory.mktemp("w2v_bert") / "model"))


@pytest.fixture(scope="module")
def waves(utterances):
    """The ENGINE recordings only, as speechdump decodes them (16 kHz)."""
    from speechdump.audio import ResamplerCache, load_audio

    cache = ResamplerCache()
    return {u.utt_id: load_audio(u, RATE, cache) for u in utterances if u.utt_id in ENGINE}


@pytest.fixture(scope="module")
def reference(model, waves):
    """{utt: [layer][true frames, dim]}, each utterance alone."""
    net, fe = AutoModel.from_pretrained(model).eval(), AutoFeatureExtractor.from_pretrained(model)
    out = {}
    for utt, wave in waves.items():
        inputs = fe(wave, sampling_rate=RATE, return_tensors="pt")
        frames = int(inputs.attention_mask.sum())
        assert frames == (1 + (len(wave) - 400) // 160) // 2  # the formula of the docstring
        with torch.inference_mode():
            hidden = net(**inputs, output_hidden_states=True).hidden_states
        out[utt] = [h[0, :frames].numpy() for h in hidden]
    return out


def max_diff(outputs, reference, utts):
    return max(float(np.abs(outputs[u][f"layer{n}"] - reference[u][n]).max())
               for u in utts for n in LAYERS)


@pytest.mark.kernels
def test_stage_equals_the_model_alone_and_does_not_depend_on_nj(tmp_path, stage_env, model,
                                                                 reference, waves):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    runs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        run_feats_stage(["--toolkit", "w2v_bert", "--model", model, "--nj", nj,
                         "--batch_seconds", 1000, "--batch_size", 64, data, out], stage_env)
        runs[nj] = {u: {f"layer{n}": m for n in LAYERS
                        for u_, m in kaldiio.load_scp_sequential(str(out / f"feats_layer{n}.scp"))
                        if u_ == u} for u in sorted(SUBSET)}
        frames = {u: int(c) for u, c in read_pairs(out / "utt2num_frames")}
        assert frames == {u: (1 + (len(waves[u]) - 400) // 160) // 2 for u in sorted(SUBSET)}
    assert max_diff(runs[3], reference, SUBSET) <= 1e-4
    assert_equal_to_rounding(runs[3], runs[1], "the jobs' sort windows follow the split, so "
                             "--nj 3 pads other batches than --nj 1")


@pytest.mark.kernels
def test_padded_batches_and_pooling_equal_each_utterance_alone(model, reference, utterances,
                                                               waves):
    # An odd number of fbank frames makes the feature extractor pad (and mask) one half frame.
    assert any((1 + (len(w) - 400) // 160) % 2 for w in waves.values())
    utterances = [u for u in utterances if u.utt_id in ENGINE]
    extractor = load_extractor("w2v_bert", model)
    sizes = []
    forward = extractor.forward

    def recording(batch):
        sizes.append(len({len(features) for features, _ in batch}))
        return forward(batch)

    extractor.forward = recording
    frames = engine_outputs(extractor, utterances, batch_seconds=1000)
    assert max(sizes) > 1  # items of different lengths were padded into one batch
    assert sorted(frames) == sorted(ENGINE)
    assert max_diff(frames, reference, waves) <= 1e-4
    pooled = engine_outputs(load_extractor("w2v_bert", model, layers="1,3", pool="mean"),
                            utterances[:6], batch_seconds=1000)
    for utt, out in pooled.items():
        assert list(out) == ["layer1", "layer3"]
        for n in (1, 3):
            assert np.abs(out[f"layer{n}"] - reference[utt][n].mean(axis=0)).max() <= 1e-4


def test_shortest_input_has_one_frame(model):
    extractor = load_extractor("w2v_bert", model, layers="0")
    assert extractor.min_seconds == 560 / RATE
    noise = np.random.default_rng(0).standard_normal(560).astype(np.float32)
    assert extractor.forward([extractor.prepare(noise)])[0]["layer0"].shape == (1, 64)
    with pytest.raises(ValueError, match="at least"):
        extractor.prepare(noise[:559])
