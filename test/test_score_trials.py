"""scripts/score_trials.sh and scripts/train_plda.sh on the real sample speakers' embeddings:
scores in trial order equal to the cosines, figures equal to a plain loop over every
threshold, AS-norm equal to its formula, VoxCeleb trial paths, PLDA, and every refusal."""

import itertools
import subprocess

import kaldiio
import numpy as np
import pytest
from conftest import REPO, make_data_dir, make_segments_data_dir, read_pairs, run_stage
from test_verification import plain_eer, plain_min_dcf

from speechdump.kaldi_io import write_ark_scp


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, stage_env):
    """Resemblyzer embeddings of all 26 sample utterances, their data dir, a Kaldi trial list
    (every pair of the speakers with two utterances or more) and a cohort (the speaker vectors
    of the speakers with one utterance)."""
    base = tmp_path_factory.mktemp("scoring")
    data = make_data_dir(base / "data")
    (data / "text").unlink()  # every utterance of wav.scp gets its embedding
    out = base / "embed"
    run_stage(["--nj", 1, data, out], stage_env)
    utt2spk = dict(read_pairs(data / "utt2spk"))
    counts = {s: list(utt2spk.values()).count(s) for s in set(utt2spk.values())}
    trial_utts = sorted(u for u, s in utt2spk.items() if counts[s] > 1)
    lines = [f"{a} {b} {'target' if utt2spk[a] == utt2spk[b] else 'nontarget'}"
             for a, b in itertools.combinations(trial_utts, 2)]
    (base / "trials").write_text("\n".join(lines) + "\n")
    speakers = dict(kaldiio.load_scp_sequential(str(out / "spk_resemblyzer.scp")))
    cohort = {s: v for s, v in speakers.items() if counts[s] == 1}
    write_ark_scp(str(base / "cohort.ark"), str(base / "cohort.scp"), cohort)
    return {"base": base, "data": data, "scp": str(out / "resemblyzer.scp"),
            "spk_scp": str(out / "spk_resemblyzer.scp"), "trials": str(base / "trials"),
            "cohort": str(base / "cohort.scp"), "utt2spk": utt2spk, "lines": lines}


def score(args, env, check=True, script="score_trials.sh"):
    proc = subprocess.run([str(REPO / "scripts" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_scores(out):
    rows = [line.split() for line in (out / "scores").read_text().splitlines()]
    return rows, np.array([float(r[2]) for r in rows])


def read_results(out):
    return {name: float(value) for name, value in
            (line.split() for line in (out / "results").read_text().splitlines())}


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cosine_scores_and_figures_of_the_sample_speakers(embedded, stage_env):
    out = embedded["base"] / "cosine"
    proc = score([embedded["trials"], embedded["scp"], embedded["scp"], out], stage_env)
    vectors = dict(kaldiio.load_scp_sequential(embedded["scp"]))
    rows, scores = read_scores(out)
    assert [" ".join(r[:2] + r[3:]) for r in rows] == embedded["lines"]  # trial order
    want = [cosine(vectors[a], vectors[b]) for a, b, *_ in rows]
    np.testing.assert_allclose(scores, want, atol=1e-6)
    labels = [r[3] == "target" for r in rows]
    assert sum(labels) == 19 and len(labels) == 190
    results = read_results(out)
    assert list(results) == ["EER", "minDCF(p_target=0.01,c_miss=1,c_fa=1)",
                             "minDCF(p_target=0.05,c_miss=1,c_fa=1)"]
    assert results["EER"] == pytest.approx(100 * plain_eer(list(scores), labels), abs=6e-5)
    for p in (0.01, 0.05):
        assert results[f"minDCF(p_target={p},c_miss=1,c_fa=1)"] == pytest.approx(
            plain_min_dcf(list(scores), labels, p), abs=6e-5)
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "19 target and 171 non-target trials" in proc.stdout


def test_figures_of_short_pieces_equal_a_loop_over_every_threshold(tmp_path, stage_env):
    """Whole utterances of the sample speakers are told apart without an error; pieces of
    1.5 s are not, so the figures compared here are not zeros."""
    data = make_segments_data_dir(tmp_path / "data", 1.5)
    run_stage(["--nj", 1, data, tmp_path / "embed"], stage_env)
    utt2spk = dict(read_pairs(data / "utt2spk"))
    (tmp_path / "trials").write_text("".join(
        f"{a} {b} {'target' if utt2spk[a] == utt2spk[b] else 'nontarget'}\n"
        for a, b in itertools.combinations(sorted(utt2spk), 2)))
    scp = tmp_path / "embed" / "resemblyzer.scp"
    out = tmp_path / "out"
    score(["--p_target", "0.01 0.05 0.2", tmp_path / "trials", scp, scp, out], stage_env)
    rows, scores = read_scores(out)
    labels = [r[3] == "target" for r in rows]
    results = read_results(out)
    eer = 100 * plain_eer(scores, labels)
    assert 1 < eer < 30 and results["EER"] == pytest.approx(eer, abs=6e-5)
    for p in (0.01, 0.05, 0.2):
        want = plain_min_dcf(scores, labels, p)
        assert 0 < want < 1
        assert results[f"minDCF(p_target={p},c_miss=1,c_fa=1)"] == pytest.approx(want, abs=6e-5)


def test_voxceleb_trials_map_paths_through_wav_scp(embedded, stage_env):
    wav = dict(read_pairs(embedded["data"] / "wav.scp"))
    lines = []
    for line in embedded["lines"]:
        a, b, label = line.split()
        lines.append(f"{int(label == 'target')} "
                     + " ".join("/".join(wav[u].split("/")[-2:]) for u in (a, b)))
    vox = embedded["base"] / "vox_trials"
    vox.write_text("\n".join(lines) + "\n")
    out = embedded["base"] / "vox"
    score(["--data_dir", embedded["data"], vox, embedded["scp"], embedded["scp"], out], stage_env)
    kaldi_out = embedded["base"] / "kaldi_form"
    score([embedded["trials"], embedded["scp"], embedded["scp"], kaldi_out], stage_env)
    assert (out / "scores").read_text() == (kaldi_out / "scores").read_text()
    assert (out / "results").read_text() == (kaldi_out / "results").read_text()


def test_as_norm_equals_its_formula_on_every_trial(embedded, stage_env):
    out = embedded["base"] / "asnorm"
    score(["--norm", "asnorm", "--cohort", embedded["cohort"], "--top_n", 4,
           embedded["trials"], embedded["scp"], embedded["scp"], out], stage_env)
    vectors = dict(kaldiio.load_scp_sequential(embedded["scp"]))
    cohort = list(dict(kaldiio.load_scp_sequential(embedded["cohort"])).values())
    assert len(cohort) == 6

    def stats(v):
        top = sorted((cosine(v, c) for c in cohort), reverse=True)[:4]
        return np.mean(top), np.std(top)

    rows, scores = read_scores(out)
    for (a, b, *_), got in zip(rows, scores):
        (me, se), (mt, st) = stats(vectors[a]), stats(vectors[b])
        s = cosine(vectors[a], vectors[b])
        assert got == pytest.approx(0.5 * ((s - me) / se + (s - mt) / st), abs=2e-6)
    assert set(read_results(out)) >= {"EER"}


def test_plda_is_trained_once_and_scores_speaker_enrollments(embedded, stage_env):
    plda_dir = embedded["base"] / "plda"
    proc = score(["--lda_dim", 200, embedded["scp"], embedded["data"] / "utt2spk", plda_dir],
                 stage_env, script="train_plda.sh")
    assert "26 embeddings of 13 speakers: dimension 256, LDA to 12 (--lda_dim 200 capped" \
        in proc.stdout
    # Enrollment by speaker: each trial speaker against every utterance of the others' sets.
    speakers = sorted({s for u, s in embedded["utt2spk"].items()
                       if list(embedded["utt2spk"].values()).count(s) > 1})
    trials = embedded["base"] / "spk_trials"
    trials.write_text("".join(f"{s} {u} {'target' if embedded['utt2spk'][u] == s else 'nontarget'}"
                              "\n" for s in speakers for u in sorted(embedded["utt2spk"])))
    out = embedded["base"] / "plda_spk"
    score(["--backend", "plda", "--plda", plda_dir / "plda.npz", "--enroll_by", "spk",
           "--data_dir", embedded["data"], "--norm", "snorm", "--cohort", embedded["cohort"],
           trials, embedded["scp"], embedded["scp"], out], stage_env)
    rows, scores = read_scores(out)
    assert len(rows) == 7 * 26 and np.isfinite(scores).all()
    # A speaker's own utterances (in the enrollment too) score above the others' on average.
    targets = scores[[r[3] == "target" for r in rows]]
    assert targets.mean() > scores[[r[3] == "nontarget" for r in rows]].mean()


def test_a_list_without_labels_gets_scores_only(embedded, stage_env):
    out = embedded["base"] / "unlabelled"
    score([embedded["trials"], embedded["scp"], embedded["scp"], out], stage_env)
    assert (out / "results").exists()
    unlabelled = embedded["base"] / "unlabelled_trials"
    unlabelled.write_text("".join(" ".join(line.split()[:2]) + "\n"
                                  for line in embedded["lines"]))
    proc = score([unlabelled, embedded["scp"], embedded["scp"], out], stage_env)
    assert "has no labels: scores only" in proc.stdout
    assert len(read_scores(out)[0]) == 190 and len(read_scores(out)[0][0]) == 3
    assert not (out / "results").exists() and not (out / "det.png").exists()  # not stale


def refusal(embedded, stage_env, tmp_path, trials_text=None, options=(), **files):
    trials = embedded["trials"]
    if trials_text is not None:
        trials = tmp_path / "trials"
        trials.write_text(trials_text)
    proc = score([*options, trials, embedded["scp"], embedded["scp"], tmp_path / "out"],
                 stage_env, check=False)
    assert proc.returncode != 0
    assert not (tmp_path / "out" / "scores").exists()
    return proc.stderr


def test_unknown_ids_are_counted_and_listed(embedded, stage_env, tmp_path):
    text = "".join(f"vctk-p225-003 ghost{k} nontarget\n" for k in range(12))
    err = refusal(embedded, stage_env, tmp_path, text)
    assert "12 test ids have no embedding in" in err
    assert "the first: ghost0 ghost1 ghost2" in err and "ghost10" not in err


def test_malformed_trials_name_the_line(embedded, stage_env, tmp_path):
    err = refusal(embedded, stage_env, tmp_path, "vctk-p225-003 vctk-p225-008 target\n"
                  "vctk-p225-003 vctk-p226-003 same\n")
    assert "trials:2: 'vctk-p225-003 vctk-p226-003 same' is not a trial" in err


def test_a_cohort_of_another_dimension_or_one_speaker_is_refused(embedded, stage_env, tmp_path):
    write_ark_scp(str(tmp_path / "c8.ark"), str(tmp_path / "c8.scp"),
                  {f"s{k}": np.ones(8, np.float32) * k for k in range(1, 4)})
    err = refusal(embedded, stage_env, tmp_path,
                  options=["--norm", "snorm", "--cohort", tmp_path / "c8.scp"])
    assert "c8.scp (--cohort) has embeddings of dimension 8; the trials' embeddings have 256" \
        in err
    one = dict(itertools.islice(kaldiio.load_scp_sequential(embedded["cohort"]), 1))
    write_ark_scp(str(tmp_path / "c1.ark"), str(tmp_path / "c1.scp"), one)
    err = refusal(embedded, stage_env, tmp_path,
                  options=["--norm", "asnorm", "--cohort", tmp_path / "c1.scp"])
    assert "a cohort of 1 embedding cannot normalise scores" in err
    err = refusal(embedded, stage_env, tmp_path, options=["--norm", "asnorm"])
    assert "--norm asnorm needs --cohort" in err
    err = refusal(embedded, stage_env, tmp_path, options=["--backend", "plda"])
    assert "--backend plda needs --plda" in err
