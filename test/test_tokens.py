"""Discrete tokens (scripts/learn_kmeans.sh, scripts/dump_tokens.sh) on fbank features of the
real speech samples."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import kaldiio
import numpy as np
import pytest
import torch
import torchaudio

from conftest import REPO, read_pairs, rounding_apart, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance
from speechdump.errors import TokenError
from speechdump.kaldi_io import num_frames, write_ark_scp
from speechdump.tokens import _Reservoir, assign, learn, load_model, sample_keys

K = 32


def run_script(name, args, env, check=True, cwd=None):
    return run_stage(args, env, cwd=cwd, check=check, script=name)


@pytest.fixture(scope="module")
def feats(tmp_path_factory, sample_utterances):
    """40-dim fbank (dither 0) of the 26 sample recordings at 16 kHz: (feats.scp, {id: matrix})."""
    base = tmp_path_factory.mktemp("feats")
    resamplers = ResamplerCache()
    matrices = {}
    for utt_id, path in sample_utterances:
        wave = load_audio(Utterance(utt_id, path), 16000, resamplers)
        matrices[utt_id] = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=40, dither=0.0,
            sample_frequency=16000).numpy()
    write_ark_scp(str(base / "feats.ark"), str(base / "feats.scp"), matrices)
    return base / "feats.scp", matrices


@pytest.fixture(scope="module")
def models(tmp_path_factory, feats, stage_env):
    """Models with seed 1 (twice) and seed 2."""
    base = tmp_path_factory.mktemp("km")
    scp, _ = feats
    procs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        procs[name] = run_script("learn_kmeans.sh", ["--n_clusters", K, "--portion", 0.5,
                                                     "--seed", seed, scp, base / name], stage_env)
    return base, procs


@pytest.fixture(scope="module")
def dumps(tmp_path_factory, feats, models, stage_env):
    base = tmp_path_factory.mktemp("tokens")
    scp, _ = feats
    km = models[0] / "a"
    runs = {}
    for nj in (1, 3):
        runs[nj] = run_script("dump_tokens.sh", ["--nj", nj, "--batch_frames", 2000, scp, km,
                                                 base / f"out{nj}"], stage_env)
    return base, runs


def test_same_seed_same_centers_other_seed_differs(models, feats):
    base, procs = models
    a, b, c = (load_model(str(base / n)) for n in "abc")
    assert a.centers.shape == (K, 40) and a.centers.dtype == np.float32
    np.testing.assert_array_equal(a.centers, b.centers)
    assert not np.allclose(a.centers, c.centers)
    # The Kaldi matrix holds the same centers; the settings describe the training.
    np.testing.assert_array_equal(kaldiio.load_mat(str(base / "a" / "centers.mat")), a.centers)
    settings = json.loads((base / "a" / "kmeans.json").read_text())
    assert settings["n_clusters"] == K and settings["dim"] == 40 and settings["seed"] == 1
    assert settings["portion"] == 0.5 and settings["num_utts"] == 13
    assert settings["source_scp"] == str(feats[0]) and settings["inertia"] > 0
    _, matrices = feats
    sampled = sample_keys(list(matrices), 0.5, 1)
    assert settings["num_frames"] == sum(len(matrices[k]) for k in sampled)
    assert f"{K} centers of dimension 40" in procs["a"].stdout
    assert "inertia" in procs["a"].stdout



@pytest.mark.kernels
def test_training_runs_as_a_job_of_the_launcher(models, feats, stage_env, cluster, tmp_path):
    """--cmd slurm.pl trains on the local cluster: the same centers as run.pl, its log kept."""
    base, procs = models
    assert "learn_kmeans.py --n_clusters" in (base / "a" / "log" / "learn_kmeans.1.log").read_text()
    proc = run_script("learn_kmeans.sh", ["--cmd", "slurm.pl", "--n_clusters", K, "--portion",
                                          0.5, "--seed", 1, feats[0], tmp_path / "km"],
                      dict(cluster, **stage_env))
    assert f"{K} centers of dimension 40" in proc.stdout
    log = (tmp_path / "km" / "log" / "learn_kmeans.1.log").read_text()
    assert "# Ended (code 0)" in log
    # slurm.pl exports only PATH to the job, as Kaldi's does, so kernel settings of this
    # shell (OPENBLAS_CORETYPE, CI's second configuration) may not reach it. Other BLAS kernels
    # round the distance products otherwise, which moves a few frames near a boundary to
    # another center over the passes: measured 2.5e-4 of the largest value between OpenBLAS's
    # SkylakeX and Haswell kernels (53 of 1280 elements beyond a relative 1e-4).
    assert rounding_apart(load_model(str(tmp_path / "km")).centers,
                          load_model(str(base / "a")).centers) <= 2e-3

def test_max_frames_caps_the_training_frames(tmp_path, feats, stage_env):
    run_script("learn_kmeans.sh", ["--n_clusters", 8, "--portion", 1, "--max_frames", 1500,
                                   feats[0], tmp_path / "km"], stage_env)
    settings = json.loads((tmp_path / "km" / "kmeans.json").read_text())
    assert settings["num_frames"] == 1500


@pytest.mark.kernels
def test_tokens_are_the_nearest_centers(dumps, feats, models):
    base, runs = dumps
    scp, matrices = feats
    centers = load_model(str(models[0] / "a")).centers.astype(np.float64)
    tokens = dict(kaldiio.load_scp(str(base / "out3" / "tokens.scp")))
    assert list(tokens) == [key for key, _ in read_pairs(scp)]
    mismatched = 0
    for key, matrix in matrices.items():
        x = matrix.astype(np.float64)
        dist = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)  # brute force, float64
        ref = dist.argmin(1)
        got = tokens[key]
        assert got.dtype == np.int32 and got.shape == (len(matrix),)
        bad = np.flatnonzero(got != ref)
        # A frame may only differ on a float tie: its center as near as the nearest, to 1e-6.
        rows = np.arange(len(x))[bad]
        assert np.all(dist[rows, got[bad]] - dist[rows, ref[bad]]
                      <= 1e-6 * dist[rows, ref[bad]] + 1e-9), key
        mismatched += len(bad)
    assert mismatched == 0, f"{mismatched} frames differ from the float64 reference (ties)"


@pytest.mark.kernels
def test_nj_does_not_change_tokens(dumps):
    base, _ = dumps
    assert (base / "out1" / "tokens").read_text() == (base / "out3" / "tokens").read_text()
    one = list(kaldiio.load_scp_sequential(str(base / "out1" / "tokens.scp")))
    three = list(kaldiio.load_scp_sequential(str(base / "out3" / "tokens.scp")))
    assert [k for k, _ in one] == [k for k, _ in three]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, three))


def test_counts_text_and_summary(dumps, feats):
    base, runs = dumps
    scp, matrices = feats
    lines = (base / "out3" / "tokens").read_text().splitlines()
    vectors = list(kaldiio.load_scp_sequential(str(base / "out3" / "tokens.scp")))
    assert len(lines) == len(vectors) == 26
    for line, (key, vector) in zip(lines, vectors):
        fields = line.split()
        assert fields[0] == key
        assert [int(t) for t in fields[1:]] == vector.tolist()
        assert len(vector) == len(matrices[key])
        assert vector.min() >= 0 and vector.max() < K
    frames = dict(read_pairs(base / "out3" / "utt2num_frames"))
    assert {k: int(v) for k, v in frames.items()} == {k: len(m) for k, m in matrices.items()}
    total = sum(len(m) for m in matrices.values())
    out = runs[3].stdout
    assert f"26 utterances, {total} frames/tokens, K={K}" in out
    assert "clusters used, entropy" in out and "tokens/s" in out
    for job in (1, 2, 3):
        assert (base / "out3" / "log" / f"dump_tokens.{job}.log").exists()


def test_rerun_skips_finished_jobs_and_redoes_a_lost_one(dumps, feats, models, stage_env):
    base, _ = dumps
    out = base / "out3"
    before = (out / "tokens").read_text()
    for name in ("done.2", "tokens.2.scp"):  # as if job 2 had been killed before finishing
        os.remove(out / "split3" / name)
    run_script("dump_tokens.sh", ["--nj", 3, feats[0], models[0] / "a", out], stage_env)
    assert "nothing to do" in (out / "log" / "dump_tokens.1.log").read_text()
    assert "nothing to do" not in (out / "log" / "dump_tokens.2.log").read_text()
    assert (out / "tokens").read_text() == before
    # Other centers: no job is reused.
    proc = run_script("dump_tokens.sh", ["--nj", 3, feats[0], models[0] / "c", out], stage_env)
    assert "nothing to do" not in (out / "log" / "dump_tokens.1.log").read_text()
    assert (out / "tokens").read_text() != before and proc.returncode == 0


@pytest.mark.kernels
def test_assign_batches_and_devices_agree(feats, models):
    _, matrices = feats
    centers = load_model(str(models[0] / "a")).centers
    x = np.concatenate(list(matrices.values()))
    whole = assign(x, centers, "cpu", batch_frames=len(x))
    np.testing.assert_array_equal(assign(x, centers, "cpu", batch_frames=777), whole)
    if torch.cuda.is_available():
        np.testing.assert_array_equal(assign(x, centers, "cuda", batch_frames=4096), whole)
    with pytest.raises(TokenError):
        assign(x[:, :20], centers)


def test_num_frames_reads_the_header(feats):
    scp, matrices = feats
    for key, location in read_pairs(scp):
        assert num_frames(location) == len(matrices[key])


def test_usage_errors(tmp_path, feats, models, stage_env):
    for name, args in (("learn_kmeans.sh", [feats[0]]), ("dump_tokens.sh", [feats[0], tmp_path]),
                       ("learn_kmeans.sh", ["--bogus", 1, feats[0], tmp_path / "km"])):
        proc = run_script(name, args, stage_env, check=False)
        assert proc.returncode == 1 and ("Usage:" in proc.stderr or "bogus" in proc.stderr)
    proc = run_script("learn_kmeans.sh", ["--portion", 1.5, feats[0], tmp_path / "km"],
                      stage_env, check=False)
    assert proc.returncode == 1 and "--portion must be in (0, 1]" in proc.stderr
    proc = run_script("dump_tokens.sh", ["--nj", 0, feats[0], models[0] / "a", tmp_path / "o"],
                      stage_env, check=False)
    assert proc.returncode == 1 and "--nj must be a positive integer" in proc.stderr
    proc = run_script("dump_tokens.sh", ["--device", "cuda:1x", feats[0], models[0] / "a",
                                         tmp_path / "o"], stage_env, check=False)
    assert proc.returncode == 1
    assert "--device must be cpu, cuda or cuda:N, got 'cuda:1x'" in proc.stderr


def test_missing_inputs_fail_naming_them(tmp_path, feats, stage_env):
    missing_km = tmp_path / "no_such_km"
    proc = run_script("dump_tokens.sh", [feats[0], missing_km, tmp_path / "out"], stage_env,
                      check=False)
    assert proc.returncode != 0 and str(missing_km) in proc.stderr
    assert not (tmp_path / "out" / "tokens").exists()
    missing_scp = tmp_path / "no_such_feats.scp"
    proc = run_script("learn_kmeans.sh", [missing_scp, tmp_path / "km"], stage_env, check=False)
    assert proc.returncode != 0 and str(missing_scp) in proc.stderr
    proc = run_script("learn_kmeans.sh", ["--n_clusters", 100000, feats[0], tmp_path / "km"],
                      stage_env, check=False)
    assert proc.returncode != 0 and "training frames for 100000 clusters" in proc.stderr


def test_a_gpu_that_is_not_there_fails_naming_it(tmp_path, feats, models, stage_env):
    env = dict(stage_env, CUDA_VISIBLE_DEVICES="")
    proc = run_script("dump_tokens.sh", ["--nj", 2, "--device", "cuda:0", feats[0],
                                         models[0] / "a", tmp_path / "out"], env, check=False)
    assert proc.returncode != 0
    assert ("--device cuda:0: no CUDA device is visible to this job (CUDA_VISIBLE_DEVICES=)"
            in proc.stderr)
    assert not (tmp_path / "out" / "tokens").exists()


# --------------------------------------------------------------------------- the stage's machinery

SLOW = ["--nj", "2", "--batch_frames", "1"]  # a distance matmul per frame: seconds per utterance


@pytest.fixture(scope="module")
def slow_feats(tmp_path_factory, feats):
    """A feats.scp whose first half (job 1 of 2) is the real utterances and whose second half
    (job 2) points 13 times at one long record of them all, repeated: with --batch_frames 1,
    job 1 finishes in a moment and job 2 takes tens of seconds."""
    base = tmp_path_factory.mktemp("slow")
    _, matrices = feats
    short = {f"a-{i:03d}": m for i, m in enumerate(list(matrices.values())[:13])}
    long = np.concatenate(list(matrices.values()) * 4)
    write_ark_scp(str(base / "short.ark"), str(base / "short.scp"), short)
    write_ark_scp(str(base / "long.ark"), str(base / "long.scp"), {"b": long})
    location = (base / "long.scp").read_text().split()[1]
    lines = (base / "short.scp").read_text().splitlines()
    lines += [f"b-{i:03d} {location}" for i in range(13)]
    (base / "feats.scp").write_text("\n".join(lines) + "\n")
    return base / "feats.scp"


def start_dump(scp, km, out, env, args=SLOW):
    return subprocess.Popen([str(REPO / "scripts" / "dump_tokens.sh"), *args, str(scp), str(km),
                             str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def token_workers(out):
    found = subprocess.run(["pgrep", "-f", f"dump_tokens.py job .*{out}/split2"],
                           capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_sigterm_stops_the_jobs_and_the_rerun_resumes(tmp_path, slow_feats, models, stage_env):
    km = models[0] / "a"
    reference = tmp_path / "reference"
    run_script("dump_tokens.sh", ["--nj", 2, slow_feats, km, reference], stage_env)
    out = tmp_path / "out"
    stage = start_dump(slow_feats, km, out, stage_env)
    ark2 = out / "split2" / "tokens.2.ark"
    wait_for(lambda: (out / "split2" / "done.1").exists() and ark2.exists()
             and ark2.stat().st_size > 0)
    assert token_workers(out)
    stage.send_signal(signal.SIGTERM)
    output, _ = stage.communicate(timeout=60)
    assert stage.returncode != 0
    assert "interrupted: stopping the jobs" in output
    wait_for(lambda: not token_workers(out), seconds=30)  # no job left running
    assert not (out / "tokens.scp").exists() and not (out / "tokens").exists()
    assert not (out / "split2" / "done.2").exists()
    assert not (out / "split2" / "tokens.2.scp").exists()

    proc = run_script("dump_tokens.sh", ["--nj", 2, slow_feats, km, out], stage_env)
    assert "tokens/s" in proc.stdout
    assert "nothing to do" in (out / "log" / "dump_tokens.1.log").read_text()
    assert "nothing to do" not in (out / "log" / "dump_tokens.2.log").read_text()
    assert (out / "tokens").read_text() == (reference / "tokens").read_text()
    assert (out / "utt2num_frames").read_text() == (reference / "utt2num_frames").read_text()
    ours = list(kaldiio.load_scp_sequential(str(out / "tokens.scp")))
    theirs = list(kaldiio.load_scp_sequential(str(reference / "tokens.scp")))
    assert [k for k, _ in ours] == [k for k, _ in theirs] == [k for k, _ in read_pairs(slow_feats)]
    assert all(a.dtype == np.int32 and np.array_equal(a, b) for (_, a), (_, b) in zip(ours, theirs))


def test_a_second_token_stage_on_the_same_out_dir_is_refused(tmp_path, slow_feats, models,
                                                             stage_env):
    km = models[0] / "a"
    out = tmp_path / "out"
    first = start_dump(slow_feats, km, out, stage_env)
    try:
        wait_for(lambda: bool(token_workers(out)))
        second = run_script("dump_tokens.sh", [*SLOW, slow_feats, km, out], stage_env,
                            check=False)
        assert second.returncode == 1
        assert f"another stage is writing {out}" in second.stderr
        assert first.poll() is None  # the first one goes on
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=60)


def test_a_failing_job_says_why_on_the_console(tmp_path, feats, models, stage_env):
    """Job 2's part holds a matrix with NaN: the stage fails with job 2's reason."""
    scp, matrices = feats
    broken = dict(matrices)
    key = list(broken)[20]
    broken[key] = broken[key].copy()
    broken[key][5, 3] = np.nan
    write_ark_scp(str(tmp_path / "f.ark"), str(tmp_path / "f.scp"), broken)
    out = tmp_path / "out"
    proc = run_script("dump_tokens.sh", ["--nj", 2, tmp_path / "f.scp", models[0] / "a", out],
                      stage_env, check=False)
    assert proc.returncode == 1
    assert "dump_tokens jobs failed; what they said:" in proc.stderr
    assert (f"job 2 ({out}/log/dump_tokens.2.log): ERROR: {out}/split2/feats.2.scp: '{key}' "
            "holds NaN or Inf") in proc.stderr
    assert "job 1 (" not in proc.stderr  # job 1 finished: not reported
    assert (out / "split2" / "done.1").exists() and not (out / "split2" / "done.2").exists()
    assert not (out / "tokens.scp").exists()


def test_features_of_another_dimension_are_refused_before_any_job(tmp_path, feats, models,
                                                                  stage_env):
    _, matrices = feats
    write_ark_scp(str(tmp_path / "f.ark"), str(tmp_path / "f.scp"),
                  {k: m[:, :20] for k, m in matrices.items()})
    out = tmp_path / "out"
    proc = run_script("dump_tokens.sh", [tmp_path / "f.scp", models[0] / "a", out], stage_env,
                      check=False)
    assert proc.returncode == 1
    first = next(iter(matrices))
    assert (f"ERROR: {tmp_path}/f.scp: '{first}' has dimension 20, the centers in "
            f"{models[0] / 'a'} have 40") in proc.stderr
    assert "nothing was written" in proc.stderr and not out.exists()


def test_the_merge_refuses_jobs_of_other_centers(tmp_path, dumps, feats, models):
    base, _ = dumps
    split = tmp_path / "split3"
    shutil.copytree(base / "out3" / "split3", split)
    record = json.loads((split / "done.2").read_text())
    record["config"]["centers_sha1"] = "0" * 40
    (split / "done.2").write_text(json.dumps(record))
    merge = [sys.executable, str(REPO / "pyscripts" / "merge_outputs.py"), "--tag", "tokens",
             "--nj", "3", "--reference", str(feats[0]), "--kmeans", str(models[0] / "a"),
             str(split), str(tmp_path / "out")]
    (tmp_path / "out").mkdir()
    proc = subprocess.run(merge, capture_output=True, text=True)
    assert proc.returncode == 1
    assert (f"ERROR: job 2 in {split} ran with another config than job 1 (centers_sha1 differ: "
            "--centers_sha1 " in proc.stderr)
    for job in (1, 2, 3):  # all three of other centers: refused against the model
        (split / f"done.{job}").write_text(json.dumps(record))
    proc = subprocess.run(merge, capture_output=True, text=True)
    assert proc.returncode == 1
    assert (f"ERROR: the jobs in {split} were not made with the centers of {models[0] / 'a'}"
            in proc.stderr)
    assert not (tmp_path / "out" / "tokens.scp").exists()
    # The right centers, but a token that is none of them: refused, and no scp left behind.
    shutil.rmtree(split)
    shutil.copytree(base / "out1" / "split1", tmp_path / "split1")
    split = tmp_path / "split1"
    tokens = dict(kaldiio.load_scp_sequential(str(split / "tokens.1.scp")))
    key = list(tokens)[7]
    tokens[key] = tokens[key].copy()
    tokens[key][3] = K
    write_ark_scp(str(split / "tokens.1.ark"), str(split / "tokens.1.scp"), tokens)
    merge[merge.index("--nj") + 1] = "1"
    merge[-2] = str(split)
    proc = subprocess.run(merge, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"ERROR: {tmp_path}/out/tokens.scp: '{key}' has tokens outside [0, {K})" in proc.stderr
    assert not (tmp_path / "out" / "tokens.scp").exists()


def test_the_job_records_and_the_merged_record(dumps, models):
    base, _ = dumps
    sha1 = load_model(str(models[0] / "a")).settings["centers_sha1"]
    meta = json.loads((base / "out1" / "meta.json").read_text())
    assert meta["config"] == {"centers_sha1": sha1, "n_clusters": K}
    assert meta["streams"] == [{"stem": "tokens", "name": "", "kind": "int", "shape": "tokens",
                                "frame_shift": None, "dim": None, "exact": False}]
    assert meta["jobs"] == 1 and meta["utterances"] == 26
    out = base / "out3"  # (other tests rerun it with other centers)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["jobs"] == 3 and meta["utterances"] == 26
    sizes = []
    for job in (1, 2, 3):
        record = json.loads((out / "split3" / f"done.{job}").read_text())
        assert record["config"] == meta["config"] and record["streams"] == meta["streams"]
        keys = [k for k, _ in read_pairs(out / "split3" / f"feats.{job}.scp")]
        assert record["input"]["num_utts"] == record["utterances"] == len(keys)
        sizes.append(len(keys))
    assert sum(sizes) == 26
    assert not (out / "utt2dur").exists()  # token jobs read no audio


# ----------------------------------------------------------------------------- out-of-core training

def test_the_seeding_sample_is_bounded_and_seeded():
    rows = np.arange(1000, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    chunks = np.split(rows, [7, 300, 301, 650])

    def sample(seed, size):
        reservoir = _Reservoir(size, 3, np.random.default_rng(seed))
        for chunk in chunks:
            reservoir.add(chunk)
        return reservoir.sample()

    np.testing.assert_array_equal(sample(0, 2000), rows)  # room for all: every row, in order
    a = sample(0, 50)
    assert a.shape == (50, 3) and len(np.unique(a[:, 0])) == 50  # 50 distinct rows
    np.testing.assert_array_equal(a, sample(0, 50))
    assert not np.array_equal(a, sample(1, 50))
    # Uniform: over many seeds each row is drawn about size / total of the time.
    hits = np.zeros(1000)
    for seed in range(400):
        hits[sample(seed, 50)[:, 0].astype(int)] += 1
    assert abs(hits[:500].sum() - hits[500:].sum()) < 0.1 * hits.sum()
    assert hits.min() > 0


def test_training_streams_passes_and_reports_them(feats):
    scp, matrices = feats
    model = learn(str(scp), 16, portion=1.0, seed=3, batch_size=1000, max_iter=4, n_init=2)
    s = model.settings
    total = sum(len(m) for m in matrices.values())
    assert s["num_frames"] == total and s["num_utts"] == 26
    assert s["init_frames"] == 3000  # 3 mini-batches' worth, not the corpus
    assert 1 <= s["passes"] <= 4
    per_pass = -(-total // 1000)
    assert s["mini_batches"] <= s["passes"] * per_pass
    # The inertia is that of the centers over every training frame.
    x = np.concatenate(list(matrices.values())).astype(np.float64)
    c = model.centers.astype(np.float64)
    expected = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum()
    assert s["inertia"] == pytest.approx(expected, rel=1e-5)
    again = learn(str(scp), 16, portion=1.0, seed=3, batch_size=1000, max_iter=4, n_init=2)
    np.testing.assert_array_equal(again.centers, model.centers)

