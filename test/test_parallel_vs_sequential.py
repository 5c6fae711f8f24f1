"""Runs test_parallel_vs_sequential.sh (sequential vs run.pl vs slurm.pl) as part of the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.kernels  # run.pl and slurm.pl jobs against a sequential run


def test_parallel_outputs_equal_the_sequential_ones(stage_env):
    proc = subprocess.run(["bash", str(HERE / "test_parallel_vs_sequential.sh")],
                          env={**stage_env, "python": sys.executable},
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run.pl --nj 4 vs --nj 1, resemblyzer.scp: 15 entries, max abs difference" in proc.stdout
    assert "all outputs equal the sequential run and are aligned with text" in proc.stdout
    if shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True,
                                                timeout=10).returncode == 0:
        assert "slurm.pl --config" in proc.stdout and "--nj 4 vs --nj 1, spk_resemblyzer.scp" \
            in proc.stdout
