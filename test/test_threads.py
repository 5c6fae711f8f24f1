"""The cores a job computes on with --num_threads auto (the default): the machine's cores shared
among the jobs run.pl runs at once, or the CPUs Slurm gives each job; and how it spends them
(--cpu_layout: the toolkit's declared layout, or the user's)."""

import json
import os
import re

import pytest

from build_speechbrain_model import build as build_speechbrain
from conftest import make_data_dir, run_feats_stage, run_stage
from speechdump.device import cpu_layout
from speechdump.errors import OptionError
from speechdump.extractors import get_class
from speechdump.extractors.base import Extractor

UTTS = ["arctic-aew-a0001", "arctic-aew-a0002", "vctk-p225-003", "vctk-p226-003"]


def threads_of(out, nj):
    """The cores each job's log says it computed on (fbank: as forward passes of one thread)."""
    found = []
    for job in range(1, nj + 1):
        log = (out / "log" / f"extract.{job}.log").read_text()
        match = re.search(r"fbank on cpu at --precision fp32, (\d+) core\(s\), --cpu_layout "
                          r"passes: (\d+) forward pass\(es\) at once, 1 torch thread\(s\) each",
                          log)
        assert match[1] == match[2], log
        found.append(int(match[1]))
    return found


@pytest.mark.parametrize("cmd,nj,at_once", [("run.pl", 1, 1), ("run.pl", 4, 4),
                                            ("run.pl --max-jobs-run 1", 2, 1)])
def test_run_pl_jobs_share_the_cores_they_run_on_at_once(cmd, nj, at_once, tmp_path,
                                                         stage_env):
    data = make_data_dir(tmp_path / "data", keep=UTTS)
    out = tmp_path / "out"
    proc = run_feats_stage(["--toolkit", "fbank", "--cmd", cmd, "--nj", nj, data, out],
                           stage_env)
    cores = len(os.sched_getaffinity(0))
    expected = max(1, cores // at_once)
    assert threads_of(out, nj) == [expected] * nj
    assert f"each job computes on {expected} core(s): {cores} cores, {at_once} job(s) at " \
           "once" in proc.stderr
    # A number is the user's.
    run_feats_stage(["--toolkit", "fbank", "--cmd", cmd, "--nj", nj, "--num_threads", 3,
                     "--force", "true", data, out], stage_env)
    assert threads_of(out, nj) == [3] * nj


def test_slurm_jobs_take_the_cpus_they_are_given(cluster, tmp_path, stage_env):
    if int(cluster["TEST_CLUSTER_CPUS"]) < 2:
        pytest.skip("the local cluster has one CPU")
    env = dict(stage_env, **{k: v for k, v in cluster.items() if k.startswith(("SLURM", "TEST"))})
    data = make_data_dir(tmp_path / "data", keep=UTTS)
    for cmd, expected in (("slurm.pl", 1), ("slurm.pl --num-threads 2", 2)):
        out = tmp_path / cmd.replace(" ", "_")
        proc = run_feats_stage(["--toolkit", "fbank", "--cmd", cmd, "--nj", 2, data, out], env)
        assert "each job computes on the CPUs the launcher gives it" in proc.stderr
        assert threads_of(out, 2) == [expected, expected]
        log = (out / "log" / "extract.1.log").read_text()
        assert f"--num_threads {expected}: one per CPU this job was given" in log


class _OnePassAtATime(Extractor):
    name = "plugin"


@pytest.mark.parametrize("toolkit,requested,expected", [
    ("speechbrain", "auto", ("intra_op", 1, 4)),  # declared: convolutions run better intra-op
    ("ssl", "auto", ("passes", 4, 1)),  # declared: transformers run better as passes
    ("speechbrain", "passes", ("passes", 4, 1)),
    ("ssl", "intra_op", ("intra_op", 1, 4)),
])
def test_the_layout_is_the_declared_one_unless_the_user_names_one(toolkit, requested, expected):
    assert cpu_layout(requested, "cpu", get_class(toolkit), 4) == expected


def test_a_layout_that_cannot_apply_is_refused():
    assert cpu_layout("auto", "cpu", _OnePassAtATime, 4) == ("intra_op", 1, 4)
    with pytest.raises(OptionError, match="plugin cannot run forward passes on several threads"):
        cpu_layout("passes", "cpu", _OnePassAtATime, 4)
    with pytest.raises(OptionError, match="--device cuda runs the model on the GPU"):
        cpu_layout("intra_op", "cuda", get_class("ssl"), 4)
    assert cpu_layout("auto", "cuda", get_class("ssl"), 4) == ("gpu", 1, 4)


def test_the_layout_is_logged_recorded_and_a_change_redoes_the_jobs(tmp_path, stage_env):
    model = build_speechbrain(tmp_path / "ecapa", channels=[32, 32, 32, 32, 96])
    data = make_data_dir(tmp_path / "data", keep=UTTS)
    out = tmp_path / "out"
    args = ["--toolkit", "speechbrain", "--model", model, "--nj", 1, "--num_threads", 2]
    run_stage([*args, data, out], stage_env)
    log = (out / "log" / "extract.1.log").read_text()
    assert "2 core(s), --cpu_layout intra_op: 1 forward pass(es) at once, 2 torch thread(s)" in log
    assert json.loads((out / "meta.json").read_text())["config"]["cpu_layout"] == "intra_op/2"
    proc = run_stage([*args, "--cpu_layout", "passes", data, out], stage_env)
    assert "job 1 ran: --cpu_layout intra_op/2 -> passes" in proc.stdout + proc.stderr
    log = (out / "log" / "extract.1.log").read_text()
    assert "2 core(s), --cpu_layout passes: 2 forward pass(es) at once, 1 torch thread(s)" in log
