"""Weights that do not fit the model are refused, naming the file, the counts and the names.

Each toolkit loads non-strictly on its own (ESPnet, SpeechBrain and Resemblyzer with
``load_state_dict(strict=False)``, transformers with random init of what is missing), so each
case here ran a partly or wholly random model before, and finished "done". The models are the
small random-init ones of the real architectures (test/build_*_model.py); the stage cases run
on the real speech samples.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import resemblyzer
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import build_espnet_model
import build_speechbrain_model
import build_ssl_model
from conftest import make_data_dir, run_stage
from speechdump import weights
from speechdump.errors import ModelError
from speechdump.extractors import check, load_extractor

SUBSET = {"arctic-aew-a0001", "vctk-p225-003", "vctk-p226-008"}


def refusal(toolkit: str, model, preflight: bool) -> str:
    """The ModelError message ``toolkit`` gives for ``model``: from the pre-flight, or (when
    the pre-flight lets it pass) from building the extractor."""
    if preflight:
        with pytest.raises(ModelError) as error:
            check(toolkit, str(model), {})
        return str(error.value)
    check(toolkit, str(model), {})
    with pytest.raises(ModelError) as error:
        load_extractor(toolkit, str(model))
    return str(error.value)


def assert_lists(message: str, path, missing, unexpected, total: int, mismatched=()) -> None:
    """The message names ``path``, the counts, and the first names of each kind."""
    assert message.startswith(f"{path}: ")
    if missing:
        assert f"{len(missing)} of {total} tensors of the model are missing from the file " \
               f"({', '.join(missing[:weights.NAMES_SHOWN])}" in message
    else:
        assert "missing" not in message
    if unexpected:
        are = "tensor in the file is" if len(unexpected) == 1 else "tensors in the file are"
        assert f"{len(unexpected)} {are} not in the model " \
               f"({', '.join(unexpected[:weights.NAMES_SHOWN])}" in message
    else:
        assert "not in the model" not in message
    if mismatched:
        have = "tensor has another shape" if len(mismatched) == 1 else "tensors have other shapes"
        assert f"{len(mismatched)} {have} ({mismatched[0]}" in message
    assert message.endswith("refusing to run it partly untrained")


def differences(model_state, file_state):
    """(missing, unexpected) names, in the order the message lists them."""
    return ([k for k in model_state if k not in file_state],
            [k for k in file_state if k not in model_state])


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- ESPnet ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def espnet_models(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("espnet")
    return {enc: build_espnet_model.build(root / enc, enc) for enc in ("ecapa_tdnn", "rawnet3")}


def training_checkpoint(model_dir: Path, dest: Path) -> Path:
    """``dest/checkpoint.pth`` as ESPnet's trainer saves it after an epoch (espnet2/train/
    trainer.py: model, reporter, optimizers, schedulers, scaler), beside the config.yaml; the
    reporter's statistics are numpy floats, as its ``aggregate`` makes them."""
    dest.mkdir(parents=True)
    shutil.copy(model_dir / "config.yaml", dest / "config.yaml")
    state = torch.load(model_dir / "model.pth")
    params = [torch.nn.Parameter(v.clone()) for v in state.values() if v.is_floating_point()]
    optimizer = torch.optim.Adam(params, lr=0.001)
    torch.save({"model": state,
                "reporter": {"stats": {1: {"valid": {"eer": np.nanmean([0.31, 0.29])}}},
                             "epoch": 1},
                "optimizers": [optimizer.state_dict()],
                "schedulers": [None],
                "scaler": None}, dest / "checkpoint.pth")
    return dest / "checkpoint.pth"


def test_espnet_training_checkpoint_is_refused_in_the_preflight(espnet_models, tmp_path):
    checkpoint = training_checkpoint(espnet_models["ecapa_tdnn"], tmp_path / "exp")
    for toolkit in ("espnet", "rawnet"):
        for model in (checkpoint, checkpoint.parent):  # the file, or the dir holding it alone
            message = refusal(toolkit, model, preflight=True)
            assert message == (
                f"{checkpoint} is a training checkpoint (keys model, reporter, optimizers, "
                "schedulers, scaler), not a model state: pass the model file (e.g. "
                "valid.eer.best.pth, or the 'model' entry saved alone)")
    # Building the extractor refuses it too (a job run without the stage's pre-flight).
    with pytest.raises(ModelError, match="is a training checkpoint"):
        load_extractor("espnet", str(checkpoint))


def test_espnet_own_loading_takes_a_training_checkpoint(espnet_models, tmp_path):
    # Why the check: ESPnet loads checkpoint.pth without a word, and the model stays random.
    from espnet2.tasks.spk import SpeakerTask

    checkpoint = training_checkpoint(espnet_models["ecapa_tdnn"], tmp_path / "exp")
    model, _ = SpeakerTask.build_model_from_file(None, checkpoint, "cpu")
    means = {k: v for k, v in model.state_dict().items() if k.endswith("running_mean")}
    assert len(means) > 30 and all(not v.any() for v in means.values())  # as initialised
    trained = torch.load(espnet_models["ecapa_tdnn"] / "model.pth")
    assert all(trained[k].any() for k in means)  # the file's: calibrated


def test_espnet_ecapa_config_with_rawnet3_weights(espnet_models, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(espnet_models["ecapa_tdnn"] / "config.yaml", mixed)
    shutil.copy(espnet_models["rawnet3"] / "model.pth", mixed)
    ecapa = torch.load(espnet_models["ecapa_tdnn"] / "model.pth")
    rawnet = torch.load(espnet_models["rawnet3"] / "model.pth")
    missing, unexpected = differences(ecapa, rawnet)
    # 36 missing: 32 parameters and buffers, and 4 BatchNorm batch counters.
    assert (len(missing), len(ecapa), len(unexpected)) == (36, 245, 15)
    for toolkit in ("espnet", "rawnet"):
        message = refusal(toolkit, mixed, preflight=False)
        assert_lists(message, mixed / "model.pth", missing, unexpected, len(ecapa))
        assert f"do not belong to the model {mixed / 'config.yaml'} builds" in message


def test_espnet_tensor_of_another_shape(espnet_models, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(espnet_models["ecapa_tdnn"], other)
    state = torch.load(other / "model.pth")
    state["projector.fc.weight"] = torch.zeros(32, 192)  # another embedding size
    torch.save(state, other / "model.pth")
    message = refusal("espnet", other, preflight=False)
    assert_lists(message, other / "model.pth", [], [], len(state),
                 mismatched=["projector.fc.weight [32, 192] in the file, [64, 192] in the "
                             "model"])


def test_espnet_good_model_loads_every_tensor(espnet_models):
    for model_dir in espnet_models.values():
        check("espnet", str(model_dir), {})
        saved = torch.load(model_dir / "model.pth")
        loaded = load_extractor("espnet", str(model_dir)).model.state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)


# --- SpeechBrain -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speechbrain_models(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("speechbrain")
    return {kind: Path(build_speechbrain_model.build(root / kind, kind))
            for kind in ("ecapa", "xvector")}


def test_speechbrain_xvector_checkpoint_in_an_ecapa_dir(speechbrain_models, tmp_path):
    ecapa = Path(shutil.copytree(speechbrain_models["ecapa"], tmp_path / "ecapa"))
    shutil.copy(speechbrain_models["xvector"] / "embedding_model.ckpt", ecapa)
    model_state = torch.load(speechbrain_models["ecapa"] / "embedding_model.ckpt")
    file_state = torch.load(ecapa / "embedding_model.ckpt")
    missing, unexpected = differences(model_state, file_state)
    assert (len(missing), len(model_state), len(unexpected)) == (231, 231, 37)
    message = refusal("speechbrain", ecapa, preflight=False)
    assert_lists(message, ecapa / "embedding_model.ckpt", missing, unexpected, len(model_state))
    assert f"do not belong to the embedding_model that {ecapa}'s hyperparams.yaml builds" \
        in message


def test_speechbrain_other_widths_name_the_file(speechbrain_models, tmp_path):
    # Other shapes make SpeechBrain's own transfer raise, without saying which file.
    ecapa = Path(shutil.copytree(speechbrain_models["ecapa"], tmp_path / "ecapa"))
    wide = build_speechbrain_model.build(tmp_path / "wide", "ecapa",
                                         channels=[128, 128, 128, 128, 384])
    shutil.copy(Path(wide) / "embedding_model.ckpt", ecapa)
    message = refusal("speechbrain", ecapa, preflight=False)
    assert re.match(rf"{re.escape(str(ecapa / 'embedding_model.ckpt'))}: \d+ tensors have other "
                    r"shapes \(blocks\.0\.conv\.conv\.weight \[128, 80, 5\] in the file, "
                    r"\[64, 80, 5\] in the model", message)


def test_speechbrain_good_models_load(speechbrain_models):
    for model_dir in speechbrain_models.values():
        extractor = load_extractor("speechbrain", str(model_dir))
        saved = torch.load(model_dir / "embedding_model.ckpt")
        loaded = extractor.model.mods.embedding_model.state_dict()
        assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)


# --- Resemblyzer -------------------------------------------------------------------------------

WHEEL_WEIGHTS = Path(resemblyzer.__file__).parent / "pretrained.pt"


def test_resemblyzer_file_with_wrong_keys(tmp_path):
    checkpoint = torch.load(WHEEL_WEIGHTS, map_location="cpu")
    renamed = {k.replace("lstm.", "rnn."): v for k, v in checkpoint["model_state"].items()}
    torch.save({**checkpoint, "model_state": renamed}, tmp_path / "renamed.pt")
    message = refusal("resemblyzer", tmp_path / "renamed.pt", preflight=True)
    lstm = [k for k in checkpoint["model_state"] if k.startswith("lstm.")]
    assert_lists(message, tmp_path / "renamed.pt", lstm, [k.replace("lstm.", "rnn.") for k in lstm],
                 total=14)
    with pytest.raises(ModelError, match="12 of 14 tensors of the model are missing"):
        load_extractor("resemblyzer", str(tmp_path / "renamed.pt"))


def test_resemblyzer_plain_state_dict_is_named(tmp_path):
    checkpoint = torch.load(WHEEL_WEIGHTS, map_location="cpu")
    torch.save(checkpoint["model_state"], tmp_path / "state.pt")
    message = refusal("resemblyzer", tmp_path / "state.pt", preflight=True)
    assert message.startswith(f"{tmp_path / 'state.pt'} is not a Resemblyzer weights file: "
                              "no 'model_state' entry (keys similarity_weight, ")


def test_resemblyzer_wheel_weights_load_as_model():
    # The wheel's file holds the GE2E loss's similarity_weight/bias beside the encoder: allowed.
    check("resemblyzer", str(WHEEL_WEIGHTS), {})
    default = load_extractor("resemblyzer").encoder.state_dict()
    named = load_extractor("resemblyzer", str(WHEEL_WEIGHTS)).encoder.state_dict()
    assert default.keys() == named.keys()
    assert all(torch.equal(default[k], named[k]) for k in default)


# --- SSL (transformers) ------------------------------------------------------------------------

@pytest.fixture
def hubert(tmp_path):
    return build_ssl_model.build(tmp_path / "hubert", "hubert", "group")


def rewrite(model_dir: Path, keep=lambda key: True, extra=None) -> dict:
    """Saves model.safetensors again with only the tensors ``keep`` accepts, plus ``extra``;
    returns the original tensors."""
    state = load_file(model_dir / "model.safetensors")
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        metadata = f.metadata()
    save_file({**{k: v for k, v in state.items() if keep(k)}, **(extra or {})},
              model_dir / "model.safetensors", metadata=metadata)
    return state


def test_ssl_weights_without_a_layer(hubert):
    state = rewrite(hubert, keep=lambda k: not k.startswith("encoder.layers.3."))
    message = refusal("ssl", hubert, preflight=False)
    assert re.match(rf"{re.escape(str(hubert / 'model.safetensors'))}: 16 of {len(state)} tensors "
                    r"of the model are missing from the file \(encoder\.layers\.3\.", message)
    assert "not in the model" not in message
    assert f"do not belong to the HubertModel {hubert / 'config.json'} describes" in message


def test_ssl_unknown_layers_and_shapes(hubert):
    rewrite(hubert, extra={"encoder.layers.7.attention.q_proj.weight": torch.zeros(96, 96),
                           "encoder.layer_norm.weight": torch.ones(48)})
    message = refusal("ssl", hubert, preflight=False)
    assert_lists(message, hubert / "model.safetensors", [],
                 ["encoder.layers.7.attention.q_proj.weight"], total=0,
                 mismatched=["encoder.layer_norm.weight [48] in the file, [96] in the model"])


def test_ssl_allowed_differences_load(hubert, tmp_path):
    # masked_spec_embed (training-time masking only) may be absent...
    rewrite(hubert, keep=lambda k: k != "masked_spec_embed")
    load_extractor("ssl", str(hubert))
    # ...and a task model's checkpoint has heads the base model ignores (lm_head of *ForCTC).
    from transformers import AutoConfig, HubertForCTC

    config = AutoConfig.from_pretrained(hubert)
    config.vocab_size = 32
    torch.manual_seed(0)
    ctc = HubertForCTC(config)
    ctc.save_pretrained(tmp_path / "ctc")
    shutil.copy(hubert / "preprocessor_config.json", tmp_path / "ctc")
    extractor = load_extractor("ssl", str(tmp_path / "ctc"))
    assert torch.equal(extractor.model.feature_projection.projection.weight,
                       ctc.hubert.feature_projection.projection.weight)


# --- through the stage -------------------------------------------------------------------------

def test_stage_refuses_a_training_checkpoint_before_writing(espnet_models, tmp_path, stage_env):
    checkpoint = training_checkpoint(espnet_models["ecapa_tdnn"], tmp_path / "exp")
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    out = tmp_path / "out"
    proc = run_stage(["--toolkit", "espnet", "--model", checkpoint, data, out], stage_env,
                     check=False)
    assert proc.returncode == 1
    assert f"ERROR: {checkpoint} is a training checkpoint (keys model, reporter, " in proc.stderr
    assert "nothing was written" in proc.stderr
    assert not out.exists()


def test_stage_refuses_mismatched_weights_before_any_output(espnet_models, tmp_path, stage_env):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(espnet_models["ecapa_tdnn"] / "config.yaml", mixed)
    shutil.copy(espnet_models["rawnet3"] / "model.pth", mixed)
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    out = tmp_path / "out"
    proc = run_stage(["--nj", 2, "--toolkit", "rawnet", "--model", mixed, data, out], stage_env,
                     check=False)
    assert proc.returncode == 1
    for job in (1, 2):
        assert (f"job {job} ({out}/log/extract.{job}.log): ERROR: {mixed / 'model.pth'}: 36 of "
                "245 tensors of the model are missing from the file") in proc.stderr
    assert not list(out.rglob("*.scp")) and not list(out.rglob("*.ark"))
