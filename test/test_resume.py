"""A job killed with SIGKILL mid-ark never leaves a readable lie, and the rerun completes it."""

import os
import signal
import subprocess
import time

import kaldiio
import numpy as np

from conftest import REPO, make_segments_data_dir, run_stage

OPTIONS = ["--nj", "2", "--sort_window", "4", "--num_workers", "1", "--batch_size", "1"]


def load(scp):
    return list(kaldiio.load_scp_sequential(str(scp)))


def scp_lines_are_readable(scp):
    """Every line of an scp that exists points at a complete array."""
    if not os.path.exists(scp):
        return True
    return all(np.isfinite(v).all() for _, v in load(scp))


def test_sigkill_mid_ark_then_rerun_equals_an_uninterrupted_run(tmp_path, stage_env):
    data = make_segments_data_dir(tmp_path / "data", piece_seconds=1.5)
    reference = tmp_path / "reference"
    run_stage([*OPTIONS, data, reference], stage_env)

    out = tmp_path / "out"
    stage = subprocess.Popen([str(REPO / "scripts" / "extract_spk_embed.sh"), *OPTIONS,
                              str(data), str(out)], env=stage_env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ark = out / "split2" / "resemblyzer.1.ark"
    scp = out / "split2" / "resemblyzer.1.scp"
    deadline = time.time() + 120
    while not (ark.exists() and ark.stat().st_size > 0) and time.time() < deadline:
        assert scp_lines_are_readable(out / "split2" / "resemblyzer.2.scp")
        time.sleep(0.02)
    assert ark.stat().st_size > 0, "job 1 never started writing"
    worker = subprocess.run(["pgrep", "-f", f"extract.py .*{out}/split2 1$"],
                            capture_output=True, text=True).stdout.split()
    assert worker, "job 1's worker process was not found"
    for pid in worker:
        os.kill(int(pid), signal.SIGKILL)
    killed_at = ark.stat().st_size
    output, _ = stage.communicate(timeout=300)
    assert stage.returncode != 0
    assert "1 / 2 failed" in output or "job failed" in output
    assert not scp.exists(), "a killed job left an scp pointing into its partial ark"
    assert not (out / "split2" / "done.1").exists()
    assert not (out / "resemblyzer.scp").exists()
    assert killed_at < (reference / "split2" / "resemblyzer.1.ark").stat().st_size

    run_stage([*OPTIONS, data, out], stage_env)
    assert "nothing to do" in (out / "log" / "extract.2.log").read_text()  # job 2 had finished
    for name in ("resemblyzer.scp", "spk_resemblyzer.scp"):
        got, want = load(out / name), load(reference / name)
        assert [k for k, _ in got] == [k for k, _ in want]
        assert max(np.abs(a - b).max() for (_, a), (_, b) in zip(got, want)) <= 1e-6
