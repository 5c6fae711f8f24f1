"""Reruns that notice what changed: audio, segments, the model at the same path, library versions.

Each rerun must redo exactly the jobs whose output depends on the change, give what a fresh run
gives, and say on the console which jobs ran and why; an unchanged rerun reuses every job and
says so instead of printing a throughput.
"""

import json
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import torch

from conftest import REPO, SAMPLES, read_pairs, run_feats_stage, run_stage

UTTS = ["arctic-aew-a0001", "arctic-aew-a0002", "ljspeech-lj-002-0020", "vctk-p225-003"]


def copied_data_dir(dest, segments=None):
    """A data dir over copies of four sample recordings (so the test can change them)."""
    audio = dest / "audio"
    audio.mkdir(parents=True)
    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    lines = []
    for utt in UTTS:
        copy = audio / (utt + "." + wav[utt].rsplit(".", 1)[1])
        shutil.copy(SAMPLES / wav[utt], copy)
        lines.append(f"{utt} {copy}\n")
    (dest / "wav.scp").write_text("".join(lines))
    ids = [s.split()[0] for s in segments] if segments else UTTS
    (dest / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in ids))
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(dest / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (dest / "spk2utt").write_text(spk2utt)
    if segments:
        (dest / "segments").write_text("".join(line + "\n" for line in segments))
    return dest


def load(out, name="feats.scp"):
    return dict(kaldiio.load_scp_sequential(str(out / name)))


def job_of(out, utt):
    """The job (of --nj 2) that extracts ``utt``."""
    return next(job for job in (1, 2)
                if utt in dict(read_pairs(out / "split2" / f"input.{job}")))


def ran(stderr_and_stdout: str, job: int) -> bool:
    return f"job {job} ran:" in stderr_and_stdout


def assert_same(out, fresh, name="feats.scp"):
    a, b = load(out, name), load(fresh, name)
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)


FBANK = ["--toolkit", "fbank", "--nj", 2]


def test_an_unchanged_rerun_reuses_every_job_and_says_so(tmp_path, stage_env):
    data = copied_data_dir(tmp_path / "data")
    first = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env).stdout
    assert "s of audio per second extracted" in first
    again = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env).stdout
    assert "all 2 jobs reused: nothing they depend on changed since they ran" in again
    assert "per second" not in again and "(no job ran)" in again
    forced = run_feats_stage([*FBANK, "--force", "true", data, tmp_path / "out"], stage_env)
    assert "--force true: every job runs again" in forced.stderr
    assert "2 jobs ran" in forced.stdout


def test_a_changed_audio_file_redoes_its_job_only(tmp_path, stage_env):
    data = copied_data_dir(tmp_path / "data")
    out = tmp_path / "out"
    run_feats_stage([*FBANK, data, out], stage_env)
    changed = "arctic-aew-a0002"
    job = job_of(out, changed)
    path = dict(read_pairs(data / "wav.scp"))[changed]
    shutil.copy(SAMPLES / "audio" / "arctic-aew-a0003.wav", path)  # another recording
    proc = run_feats_stage([*FBANK, data, out], stage_env)
    assert ran(proc.stdout, job) and not ran(proc.stdout, 3 - job)
    assert f"'{changed}': its audio file changed (size" in proc.stdout
    assert f"jobs reused, nothing they depend on changed: {3 - job}" in proc.stdout
    run_feats_stage([*FBANK, data, tmp_path / "fresh"], stage_env)
    assert_same(out, tmp_path / "fresh")


def test_a_changed_file_read_through_a_pipe_redoes_its_job(tmp_path, stage_env):
    data = copied_data_dir(tmp_path / "data")
    wav = dict(read_pairs(data / "wav.scp"))
    piped, hidden = "arctic-aew-a0002", "vctk-p225-003"
    wav[piped] = f"cat {wav[piped]} |"
    wav[hidden] = f"sh -c 'cat {wav[hidden]}' |"  # its file is inside a quoted word: not seen
    (data / "wav.scp").write_text("".join(f"{u} {e}\n" for u, e in sorted(wav.items())))
    out = tmp_path / "out"
    first = run_feats_stage([*FBANK, data, out], stage_env).stdout
    assert (f"1 utterances (first: {hidden}) read through pipe commands that name no file: a "
            "change in what they read is not seen, so a rerun reuses their jobs; --force true "
            "redoes them") in first
    shutil.copy(SAMPLES / "audio" / "arctic-aew-a0003.wav", wav[piped].split()[1])
    proc = run_feats_stage([*FBANK, data, out], stage_env)
    job = job_of(out, piped)
    assert ran(proc.stdout, job)
    assert f"'{piped}': a file its pipe command reads changed" in proc.stdout
    if job_of(out, hidden) != job:
        assert f"jobs reused, nothing they depend on changed: {3 - job}" in proc.stdout
    run_feats_stage([*FBANK, data, tmp_path / "fresh"], stage_env)
    assert_same(out, tmp_path / "fresh")


def test_a_moved_segment_end_redoes_its_job_only(tmp_path, stage_env):
    segments = [f"{u}-0 {u} 0 1.2" for u in UTTS]
    data = copied_data_dir(tmp_path / "data", segments)
    out = tmp_path / "out"
    run_feats_stage([*FBANK, data, out], stage_env)
    changed = f"{UTTS[1]}-0"
    job = job_of(out, changed)
    segments[1] = f"{changed} {UTTS[1]} 0 0.8"
    (data / "segments").write_text("".join(line + "\n" for line in segments))
    proc = run_feats_stage([*FBANK, data, out], stage_env)
    assert ran(proc.stdout, job) and not ran(proc.stdout, 3 - job)
    assert f"'{changed}': its segment changed (0..1.2 s -> 0..0.8 s)" in proc.stdout
    assert float(dict(read_pairs(out / "utt2dur"))[changed]) == pytest.approx(0.8, abs=1e-3)
    run_feats_stage([*FBANK, data, tmp_path / "fresh"], stage_env)
    assert_same(out, tmp_path / "fresh")


def test_a_model_replaced_at_the_same_path_redoes_every_job(tmp_path, stage_env):
    from speechdump.extractors import get_class

    data = copied_data_dir(tmp_path / "data")
    model = tmp_path / "encoder.pt"
    shutil.copy(get_class("resemblyzer").model_files(None)[0], model)
    out = tmp_path / "out"
    args = ["--nj", 2, "--model", model, data]
    run_stage([*args, out], stage_env)
    before = load(out, "resemblyzer.scp")
    checkpoint = torch.load(model, map_location="cpu", weights_only=False)
    name = next(k for k in checkpoint["model_state"] if k.startswith("linear.weight"))
    checkpoint["model_state"][name] = checkpoint["model_state"][name] * 1.5
    torch.save(checkpoint, model)  # as an ESPnet best-model link moving to a newer epoch
    proc = run_stage([*args, out], stage_env)
    assert ran(proc.stdout, 1) and ran(proc.stdout, 2)
    assert f"the model changed: {model} (sha256" in proc.stdout
    after = load(out, "resemblyzer.scp")
    assert max(np.abs(before[k] - after[k]).max() for k in before) > 1e-3
    run_stage([*args, tmp_path / "fresh"], stage_env)
    assert_same(out, tmp_path / "fresh", "resemblyzer.scp")


def test_a_changed_library_version_redoes_the_job_and_the_merge_refuses_a_mix(tmp_path,
                                                                            stage_env):
    data = copied_data_dir(tmp_path / "data")
    out = tmp_path / "out"
    run_feats_stage([*FBANK, data, out], stage_env)
    done = out / "split2" / "done.1"
    record = json.loads(done.read_text())
    installed = record["config"]["versions"]["torch"]
    record["config"]["versions"]["torch"] = "2.0.0"  # as if job 1 ran before an upgrade
    done.write_text(json.dumps(record))

    merge = subprocess.run(
        [sys.executable, str(REPO / "pyscripts" / "merge_outputs.py"), "--tag", "feats", "--nj",
         "2", "--source_ids", str(data / "wav.scp"), str(out / "split2"), str(tmp_path / "m")],
        capture_output=True, text=True, env=stage_env)
    assert merge.returncode == 1
    assert "job 2 in" in merge.stderr and "ran with another config than job 1 (versions " \
        "differ: library versions changed: torch 2.0.0 -> " + installed in merge.stderr

    proc = run_feats_stage([*FBANK, data, out], stage_env)
    assert f"job 1 ran: library versions changed: torch 2.0.0 -> {installed}" in proc.stdout
    assert not ran(proc.stdout, 2)
    run_feats_stage([*FBANK, data, tmp_path / "fresh"], stage_env)
    assert_same(out, tmp_path / "fresh")


def test_a_skip_bad_rerun_redoes_only_the_job_that_failed(tmp_path, stage_env):
    data = copied_data_dir(tmp_path / "data")
    bad = "ljspeech-lj-002-0020"
    path = dict(read_pairs(data / "wav.scp"))[bad]
    with open(path, "r+b") as f:
        f.truncate(200)  # a header and almost no samples: a truncated file
    out = tmp_path / "out"
    proc = run_feats_stage([*FBANK, data, out], stage_env, check=False)
    assert proc.returncode == 1 and f"ERROR: utterance '{bad}'" in proc.stderr
    assert "rerun with --skip_bad true: finished jobs are reused" in proc.stderr
    failed = job_of(out, bad)
    clean = 3 - failed
    ark = out / "split2" / f"feats.{clean}.ark"
    written = ark.stat().st_mtime_ns

    proc = run_feats_stage([*FBANK, "--skip_bad", "true", data, out], stage_env)
    assert ark.stat().st_mtime_ns == written  # the clean job's ark was not rewritten
    assert "nothing to do" in (out / "log" / f"extract.{clean}.log").read_text()
    assert f"jobs reused, nothing they depend on changed: {clean}" in proc.stdout
    assert list(dict(read_pairs(out / "bad_utts"))) == [bad]

    proc = run_feats_stage([*FBANK, data, out], stage_env, check=False)
    assert proc.returncode == 1  # without --skip_bad, the bad utterance stops its job again
    assert "it skipped 1 bad utterances with --skip_bad true" in \
        (out / "log" / f"extract.{failed}.log").read_text()
    assert ark.stat().st_mtime_ns == written
