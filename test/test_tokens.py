"""Discrete tokens (scripts/learn_kmeans.sh, scripts/dump_tokens.sh) on fbank features of the
real speech samples."""

import json
import os

import kaldiio
import numpy as np
import pytest
import torch
import torchaudio

from conftest import read_pairs, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance
from speechdump.storage import write_ark_scp
from speechdump.tokens import TokenError, assign, load_model, num_frames, sample_keys

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



def test_training_runs_as_a_job_of_the_launcher(models, feats, stage_env, cluster, tmp_path):
    """--cmd slurm.pl trains on the local cluster: the same centers as run.pl, its log kept."""
    base, procs = models
    assert "learn_kmeans.py --n_clusters" in (base / "a" / "log" / "learn_kmeans.log").read_text()
    proc = run_script("learn_kmeans.sh", ["--cmd", "slurm.pl", "--n_clusters", K, "--portion",
                                          0.5, "--seed", 1, feats[0], tmp_path / "km"],
                      dict(cluster, **stage_env))
    assert f"{K} centers of dimension 40" in proc.stdout
    log = (tmp_path / "km" / "log" / "learn_kmeans.log").read_text()
    assert "# Ended (code 0)" in log
    # slurm.pl exports only PATH to the job, as Kaldi's does, so a BLAS setting of this
    # shell (OPENBLAS_CORETYPE) may not reach it: equal up to BLAS kernel rounding.
    np.testing.assert_allclose(load_model(str(tmp_path / "km")).centers,
                               load_model(str(base / "a")).centers, rtol=1e-4)

def test_max_frames_caps_the_training_frames(tmp_path, feats, stage_env):
    run_script("learn_kmeans.sh", ["--n_clusters", 8, "--portion", 1, "--max_frames", 1500,
                                   feats[0], tmp_path / "km"], stage_env)
    settings = json.loads((tmp_path / "km" / "kmeans.json").read_text())
    assert settings["num_frames"] == 1500


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
    os.remove(out / "split3" / "tokens.2.scp")  # as if job 2 had been killed before finishing
    run_script("dump_tokens.sh", ["--nj", 3, feats[0], models[0] / "a", out], stage_env)
    assert "nothing to do" in (out / "log" / "dump_tokens.1.log").read_text()
    assert "nothing to do" not in (out / "log" / "dump_tokens.2.log").read_text()
    assert (out / "tokens").read_text() == before
    # Other centers: no job is reused.
    proc = run_script("dump_tokens.sh", ["--nj", 3, feats[0], models[0] / "c", out], stage_env)
    assert "nothing to do" not in (out / "log" / "dump_tokens.1.log").read_text()
    assert (out / "tokens").read_text() != before and proc.returncode == 0


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
