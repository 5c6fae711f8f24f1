"""A job killed with SIGKILL mid-ark never leaves a readable lie, and the rerun completes it,
going on from the last window the job committed."""

import json
import os
import signal
import subprocess
import time

import kaldiio
import numpy as np
import pytest

from conftest import REPO, make_segments_data_dir, run_stage
from speechdump.data import read_table

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


def committed(progress):
    """Utterances the last complete line of a job's progress.<n> says are committed."""
    lines = [line for line in progress.read_text().split("\n")[1:] if line.endswith("}")]
    return json.loads(lines[-1])["consumed"] if lines else 0


@pytest.mark.kernels
def test_a_job_killed_near_its_end_resumes_after_its_last_committed_window(tmp_path,
                                                                           stage_env):
    """SIGKILL late in a one-job stage; the rerun runs only the windows not committed, and
    its ark is byte for byte the ark of an uninterrupted run (same batches, same threads)."""
    options = ["--nj", "1", "--sort_window", "8", "--num_workers", "1"]
    data = make_segments_data_dir(tmp_path / "data", piece_seconds=1.5)
    total = len((data / "segments").read_text().splitlines())
    reference = tmp_path / "reference"
    run_stage([*options, data, reference], stage_env)

    out = tmp_path / "out"
    split = out / "split1"
    stage = subprocess.Popen([str(REPO / "scripts" / "extract_spk_embed.sh"), *options,
                              str(data), str(out)], env=stage_env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and stage.poll() is None:
        if (split / "progress.1").exists() and committed(split / "progress.1") >= total * 0.6:
            break
        time.sleep(0.02)
    worker = subprocess.run(["pgrep", "-f", f"extract.py .*{split} 1$"],
                            capture_output=True, text=True).stdout.split()
    assert worker, "the job had finished before it could be killed"
    for pid in worker:
        os.kill(int(pid), signal.SIGKILL)
    stage.communicate(timeout=300)
    assert stage.returncode != 0
    kept = committed(split / "progress.1")
    assert total * 0.6 <= kept < total
    assert not (split / "resemblyzer.1.scp").exists() and not (out / "resemblyzer.scp").exists()

    proc = run_stage([*options, data, out], stage_env)
    assert f"job 1 resumed after the {kept} utterances it had committed" in proc.stdout
    log = (out / "log" / "extract.1.log").read_text()
    assert f"job 1 resumes after the {kept} of its {total} utterances" in log
    record = json.loads((split / "done.1").read_text())
    assert record["resumed"] == kept and record["utterances"] == total
    assert not (split / "progress.1").exists()
    assert len((split / "utt2dur.1").read_text().splitlines()) == total
    for name in ("split1/resemblyzer.1.ark", "split1/resemblyzer.1.scp"):
        assert (out / name).read_bytes() == (reference / name).read_bytes().replace(
            str(reference).encode(), str(out).encode()), name
    got, want = load(out / "resemblyzer.scp"), load(reference / "resemblyzer.scp")
    assert [k for k, _ in got] == [k for k, _ in want]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))


def test_a_job_that_fails_on_a_bad_utterance_keeps_its_committed_windows(tmp_path, stage_env):
    """The job stops at a bad utterance late in its input; the rerun with --skip_bad true
    starts after the windows it committed, lists the bad one and keeps all the rest."""
    options = ["--nj", "1", "--sort_window", "8", "--num_workers", "1"]
    data = make_segments_data_dir(tmp_path / "data", piece_seconds=1.5)
    segments = (data / "segments").read_text().splitlines()
    reco = segments[-1].split()[1]
    bad = "zzz-beyond-the-end"  # sorts last: the job fails after committing the rest
    with open(data / "segments", "a") as f:
        f.write(f"{bad} {reco} 9000.0 9001.0\n")
    with open(data / "utt2spk", "a") as f:
        f.write(f"{bad} {segments[-1].split()[0].rsplit('-', 1)[0]}\n")
    if (data / "utt2dur").exists():
        with open(data / "utt2dur", "a") as f:
            f.write(f"{bad} 1.0\n")
    (data / "spk2utt").write_text(subprocess.run(
        [str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
        check=True, capture_output=True, text=True).stdout)
    out = tmp_path / "out"
    proc = run_stage([*options, data, out], stage_env, check=False)
    assert proc.returncode != 0 and bad in proc.stdout + proc.stderr
    kept = committed(out / "split1" / "progress.1")
    assert kept >= len(segments) - 8

    run_stage([*options, "--skip_bad", "true", data, out], stage_env)
    log = (out / "log" / "extract.1.log").read_text()
    assert f"job 1 resumes after the {kept} of its {len(segments) + 1} utterances" in log
    assert list(read_table(out / "bad_utts")) == [bad]
    assert len(load(out / "resemblyzer.scp")) == len(segments)
