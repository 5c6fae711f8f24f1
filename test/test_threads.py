"""The cores a job computes on with --num_threads auto (the default): the machine's cores shared
among the jobs run.pl runs at once, or the CPUs Slurm gives each job. A job runs them as
single-threaded forward passes at once, so its outputs never depend on the number
(test_forward_workers.py)."""

import os
import re

import pytest

from conftest import make_data_dir, run_feats_stage

UTTS = ["arctic-aew-a0001", "arctic-aew-a0002", "vctk-p225-003", "vctk-p226-003"]


def threads_of(out, nj):
    """The cores each job's log says it computed on (as forward passes of one thread each)."""
    found = []
    for job in range(1, nj + 1):
        log = (out / "log" / f"extract.{job}.log").read_text()
        match = re.search(r"fbank on cpu at --precision fp32, (\d+) core\(s\): (\d+) forward "
                          r"pass\(es\) at once, 1 torch thread\(s\) each", log)
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
