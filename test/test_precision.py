"""``--precision`` on the CPU: bf16 through a stage, fp32 unchanged, refusals, redo and merge.

bf16 runs the real Resemblyzer encoder (shipped in its wheel) under CPU autocast: its outputs
must differ from fp32's (autocast took effect) yet agree closely, and be stored as float32.
Measured: cosine to fp32 at least 0.99935 over the 26 samples (0.99964 on the four used here),
max abs difference 8.8e-3 on unit vectors; asserted: >= 0.998. The GPU precisions are tested
in test/test_gpu.py.
"""

import json
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from build_hf_models import build_w2v_bert, build_whisper, build_xvector
from build_ssl_model import build as build_ssl
from conftest import REPO, assert_equal_to_rounding, engine_outputs, make_data_dir, run_stage
from speechdump import precision
from speechdump.errors import OptionError, PrecisionError
from speechdump.extractors.base import INT, TOKENS, Stream

UTTS = {"arctic-aew-a0001", "arctic-aew-a0002", "ljspeech-lj-002-0020", "vctk-p225-003"}
BF16_COSINE = 0.998


def load(scp):
    return dict(kaldiio.load_scp_sequential(str(scp)))


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def skip_without_cpu_bf16():
    problem = precision.cpu_bf16_problem()
    if problem:  # refused by the pre-flight: test_bf16_on_a_cpu_without_bf16_kernels_...
        pytest.skip(f"bf16 on this CPU: {problem}")


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, stage_env):
    """The speaker stage at --nj 2 with --precision fp32: its data dir, out dir and outputs."""
    tmp = tmp_path_factory.mktemp("precision")
    data = make_data_dir(tmp / "data", keep=UTTS)
    out = tmp / "out"
    run_stage(["--nj", 2, "--precision", "fp32", data, out], stage_env)
    return {"data": data, "out": out, "fp32": load(out / "resemblyzer.scp")}


@pytest.fixture(scope="module")
def runs(fp32_run, stage_env):
    """The same out dir run again at --precision bf16 (its console kept); the outputs of each."""
    skip_without_cpu_bf16()
    bf16 = run_stage(["--nj", 2, "--precision", "bf16", fp32_run["data"], fp32_run["out"]],
                     stage_env)
    return dict(fp32_run, bf16=load(fp32_run["out"] / "resemblyzer.scp"),
                console=bf16.stdout + bf16.stderr)


@pytest.mark.kernels
def test_fp32_equals_a_run_without_the_option(fp32_run, utterances):
    from speechdump.extractors import load_extractor

    alone = engine_outputs(load_extractor("resemblyzer"),
                           [u for u in utterances if u.utt_id in UTTS])
    assert_equal_to_rounding({k: fp32_run["fp32"][k] for k in alone}, alone,
                             "the stage's two jobs batch other partials together than this "
                             "process, and the LSTM's products round by their row count")


def test_bf16_on_the_cpu_differs_from_fp32_but_agrees_and_is_stored_as_float32(runs):
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert list(bf16) == list(fp32)
    assert all(v.dtype == np.float32 for v in bf16.values())
    worst_difference = max(float(np.abs(bf16[k] - fp32[k]).max()) for k in fp32)
    worst_cosine = min(cosine(bf16[k], fp32[k]) for k in fp32)
    print(f"\nbf16 vs fp32: max abs difference {worst_difference:.1e}, worst cosine "
          f"{worst_cosine:.6f}")
    assert worst_difference > 1e-4  # autocast took effect
    assert worst_cosine >= BF16_COSINE
    meta = json.loads((runs["out"] / "meta.json").read_text())
    assert meta["config"]["precision"] == "bf16" and meta["config"]["dtype"] == "float32"


def test_a_changed_precision_redoes_every_job(runs):
    for job in (1, 2):
        assert f"job {job} ran: --precision fp32 -> bf16" in runs["console"]


def test_the_merge_refuses_jobs_of_two_precisions(runs, tmp_path, stage_env):
    split = runs["out"] / "split2"
    done = split / "done.2"
    saved = done.read_text()
    record = json.loads(saved)
    record["config"]["precision"] = "fp32"  # as if job 2 had run before the change
    done.write_text(json.dumps(record))
    try:
        merge = subprocess.run(
            [sys.executable, str(REPO / "pyscripts" / "merge_outputs.py"), "--tag",
             "resemblyzer", "--nj", "2", "--source_ids", str(runs["data"] / "wav.scp"),
             str(split), str(tmp_path / "merged")],
            capture_output=True, text=True, env=stage_env)
    finally:
        done.write_text(saved)
    assert merge.returncode == 1
    assert (f"ERROR: the jobs in {split} ran at different --precision (job 1: bf16; job 2: "
            "fp32): outputs of one precision never mix with another's") in merge.stderr


@pytest.mark.parametrize("value", ["tf32", "fp16"])
def test_gpu_precisions_on_the_cpu_are_refused_before_anything_is_written(tmp_path, stage_env,
                                                                          value):
    data = make_data_dir(tmp_path / "data", keep=UTTS)
    out = tmp_path / "out"
    proc = run_stage(["--precision", value, data, out], stage_env, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --precision {value} needs --device cuda (this stage has --device "
                      f"cpu): {precision._GPU_ONLY[value]}"]
    assert "refused before any job: nothing was written" in proc.stderr
    assert not out.exists()


def test_bf16_on_a_cpu_without_bf16_kernels_is_refused_naming_what_is_missing(tmp_path,
                                                                               stage_env):
    # oneDNN capped below AVX-512, as on a CPU without it: the LSTM had no bf16 kernel, and the
    # jobs died in their first forward pass.
    data = make_data_dir(tmp_path / "data", keep=UTTS)
    out = tmp_path / "out"
    proc = run_stage(["--precision", "bf16", data, out],
                     dict(stage_env, ONEDNN_MAX_CPU_ISA="AVX2"), check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1
    assert errors[0].startswith("ERROR: --precision bf16 on --device cpu: oneDNN has no bfloat16 "
                                "kernels here: they need AVX-512 (avx512bw, avx512vl, avx512dq) "
                                "or AMX, and this CPU (")
    assert errors[0].endswith("is capped by ONEDNN_MAX_CPU_ISA=AVX2; use --precision fp32")
    assert "refused before any job: nothing was written" in proc.stderr
    assert not out.exists()


def test_integer_streams_run_in_fp32_only():
    codes = [Stream(kind=INT, shape=TOKENS), Stream("durations", kind=INT, shape=TOKENS)]
    precision.check("fp32", "cuda", codes, "codec")
    for value in ("tf32", "bf16", "fp16"):
        with pytest.raises(OptionError, match=f"--precision {value}: --toolkit codec writes "
                                              r"integer streams \(\(one stream\), durations\), "
                                              "which run in fp32 only"):
            precision.check(value, "cuda", codes, "codec")


def test_forward_context_is_autocast_for_bf16_and_fp16_only():
    import torch

    for value in ("fp32", "tf32"):
        with precision.forward_context(value, "cpu"):
            assert not torch.is_autocast_enabled("cpu")
    with precision.forward_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_non_finite_outputs_at_reduced_precision_stop_the_job():
    overflowed = [{"layer1": np.array([1.0, np.inf], dtype=np.float32)}]
    precision.check_finite("fp32", overflowed)  # fp32 outputs are not inspected
    precision.check_finite("bf16", [np.ones(3, dtype=np.float32), np.arange(3)])
    with pytest.raises(PrecisionError, match="--precision fp16: a forward pass of 1 utterance"):
        precision.check_finite("fp16", overflowed)


# Families whose forward pass computes a front end (log-mel, fbank) or pads: each must run under
# bf16 autocast, keep its front end in float32, and store float32. toolkit, builder, options.
FAMILIES = {
    "whisper-causal": ("whisper", build_whisper, {"window_seconds": 2.0, "hop_seconds": 1.0,
                                                  "causal": True, "pool": "last"}),
    "whisper-long": ("whisper", build_whisper, {"layers": "1"}),
    "w2v_bert-causal": ("w2v_bert", build_w2v_bert, {"window_seconds": 2.0, "hop_seconds": 1.0,
                                                     "causal": True, "pool": "mean"}),
    "ssl": ("ssl", lambda d: build_ssl(d, "hubert", "group"), {"layers": "2"}),
    "xvector": ("xvector", lambda d: build_xvector(d, "wavlm", "group"), {}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_runs_at_bf16_and_stores_float32(family, tmp_path, utterances):
    from speechdump import engine
    from speechdump.extractors import load_extractor

    skip_without_cpu_bf16()
    toolkit, build, options = FAMILIES[family]
    extractor = load_extractor(toolkit, str(build(tmp_path / family)), "cpu", **options)
    subset = [u for u in utterances if u.utt_id in UTTS]
    outputs = {}
    for value in ("fp32", "bf16"):
        outputs[value] = {}
        engine.run(subset, extractor, outputs[value].__setitem__,
                   engine.EngineOptions(progress=False, precision=value))
    for utt, reference in outputs["fp32"].items():
        streams = reference if isinstance(reference, dict) else {"": reference}
        got = outputs["bf16"][utt] if isinstance(reference, dict) else {"": outputs["bf16"][utt]}
        for name, array in streams.items():
            if name == "times":
                np.testing.assert_array_equal(got[name], array)
                continue
            assert got[name].dtype == np.float32 and np.isfinite(got[name]).all()
            relative = float(np.abs(got[name] - array).max() / np.abs(array).max())
            assert 0 < relative <= 0.1, f"{family} {utt} {name}: {relative:.2e}"
