"""A stage stopped with SIGTERM stops its jobs and promotes nothing; one out_dir, one stage."""

import os
import signal
import subprocess
import time

import kaldiio
import pytest

from conftest import REPO, make_segments_data_dir, run_stage

SLOW = ["--nj", "2", "--sort_window", "4", "--num_workers", "1", "--batch_size", "1"]


def start_stage(data, out, env, launcher=()):
    return subprocess.Popen([str(REPO / "scripts" / "extract_spk_embed.sh"), *SLOW, *launcher,
                             str(data), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def workers(out):
    found = subprocess.run(["pgrep", "-f", f"extract.py .*{out}/split2"], capture_output=True,
                           text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.parametrize("cmd", ["run.pl", "slurm.pl"])
def test_sigterm_stops_the_jobs_and_the_rerun_resumes(tmp_path, stage_env, cmd, request):
    if cmd == "slurm.pl":  # the jobs run under slurmd; slurm.pl cancels them
        stage_env = dict(request.getfixturevalue("cluster"), **stage_env)
    data = make_segments_data_dir(tmp_path / "data", piece_seconds=1.5)
    out = tmp_path / "out"
    stage = start_stage(data, out, stage_env, ["--cmd", cmd])
    wait_for(lambda: (out / "split2" / "resemblyzer.1.ark").exists()
             and (out / "split2" / "resemblyzer.1.ark").stat().st_size > 0)
    assert workers(out)
    stage.send_signal(signal.SIGTERM)
    output, _ = stage.communicate(timeout=60)
    assert stage.returncode != 0
    assert "interrupted: stopping the jobs" in output
    if cmd == "slurm.pl":
        assert "slurm.pl: got SIGTERM, cancelling Slurm job" in output
    wait_for(lambda: not workers(out), seconds=30)  # no job left running
    assert not (out / "resemblyzer.scp").exists()
    assert not (out / "split2" / "done.1").exists()

    proc = run_stage([*SLOW, "--cmd", cmd, data, out], stage_env)
    assert "resemblyzer:" in proc.stdout
    keys = [k for k, _ in kaldiio.load_scp_sequential(str(out / "resemblyzer.scp"))]
    assert keys == [line.split()[0] for line in (data / "segments").read_text().splitlines()]


def test_a_second_stage_on_the_same_out_dir_is_refused(tmp_path, stage_env):
    data = make_segments_data_dir(tmp_path / "data", piece_seconds=1.5)
    out = tmp_path / "out"
    first = start_stage(data, out, stage_env)
    try:
        wait_for(lambda: bool(workers(out)))
        second = run_stage([*SLOW, data, out], stage_env, check=False)
        assert second.returncode == 1
        assert f"another stage is writing {out}" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)
