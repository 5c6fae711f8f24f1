"""The verification back end's parts against independent references: EER and minDCF against a
plain loop over every threshold, AS-norm against its formula for one trial, PLDA scores against
the two-covariance model's Gaussian likelihoods, PLDA training against a known model, and the
trial list forms."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from speechdump.errors import TrialError
from speechdump.verification import metrics, plda
from speechdump.verification.scoring import CosineBackend, Embeddings, normalise
from speechdump.verification.trials import read_trials


def plain_rates(scores, labels):
    """(threshold, P_miss, P_fa) at every distinct score taken as the threshold, and at +inf,
    each counted over all trials."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    targets, nontargets = scores[labels], scores[~labels]
    return [(t, (targets < t).sum() / len(targets), (nontargets >= t).sum() / len(nontargets))
            for t in sorted(set(scores.tolist())) + [float("inf")]]


def plain_eer(scores, labels):
    points = plain_rates(scores, labels)
    for (_, m0, f0), (_, m1, f1) in zip(points, points[1:]):
        if m1 - f1 >= 0 > m0 - f0:  # the crossing lies between these two thresholds
            t = (f0 - m0) / ((f0 - m0) - (f1 - m1))
            return f0 + t * (f1 - f0)
    raise AssertionError("no crossing")


def plain_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0):
    best = min(c_miss * m * p + c_fa * f * (1 - p) for _, m, f in plain_rates(scores, labels))
    return best / min(c_miss * p, c_fa * (1 - p))


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, 1), (2, 2)])
def test_eer_and_min_dcf_equal_a_loop_over_every_threshold(seed, decimals):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(1.5, 1, 60), rng.normal(-1, 1, 400)]
    if decimals is not None:  # ties, across classes too
        scores = np.round(scores, decimals)
    labels = np.r_[np.ones(60, bool), np.zeros(400, bool)]
    order = rng.permutation(len(scores))
    scores, labels = scores[order], labels[order]
    rates = metrics.error_rates(scores, labels)
    eer, _ = metrics.equal_error_rate(rates)
    assert eer == pytest.approx(plain_eer(list(scores), list(labels)), abs=1e-12)
    for p, c_miss, c_fa in [(0.01, 1, 1), (0.05, 1, 1), (0.1, 10, 1), (0.5, 1, 3)]:
        dcf, _ = metrics.min_dcf(rates, p, c_miss, c_fa)
        assert dcf == pytest.approx(plain_min_dcf(list(scores), list(labels), p, c_miss, c_fa),
                                    abs=1e-12)


def test_eer_of_separated_and_of_equal_scores():
    labels = np.array([True, True, False, False])
    assert metrics.equal_error_rate(metrics.error_rates(np.array([3., 2., 1., 0.]), labels))[0] \
        == 0
    # One threshold for all: accept everything (fa 1) or nothing (miss 1): they cross at 0.5.
    assert metrics.equal_error_rate(metrics.error_rates(np.ones(4), labels))[0] == 0.5
    dcf, _ = metrics.min_dcf(metrics.error_rates(np.ones(4), labels), 0.01)
    assert dcf == 1.0  # no threshold beats rejecting everything


def test_metrics_need_both_classes_and_finite_scores():
    with pytest.raises(TrialError, match="0 non-targets"):
        metrics.error_rates(np.array([1., 2.]), np.array([True, True]))
    with pytest.raises(TrialError, match="NaN"):
        metrics.error_rates(np.array([1., np.nan]), np.array([True, False]))


def test_as_norm_equals_its_formula_for_one_trial():
    rng = np.random.default_rng(3)
    enroll, test, cohort = rng.normal(size=(4, 16)), rng.normal(size=(5, 16)), \
        rng.normal(size=(40, 16))
    backend = CosineBackend(mean=rng.normal(size=16) * 0.1)
    sides = [backend.side(Embeddings([f"{n}{i}" for i in range(len(m))], m, n))
             for n, m in (("e", enroll), ("t", test), ("c", cohort))]
    rows_e, rows_t = np.array([2, 0]), np.array([4, 1])
    raw = backend.score_pairs(sides[0], rows_e, sides[1], rows_t)
    got = normalise(backend, raw, sides[0], rows_e, sides[1], rows_t, sides[2], top_n=7)

    def cos(a, b):
        a, b = a - backend.mean, b - backend.mean
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    e, t = enroll[2], test[4]
    s = cos(e, t)
    top_e = sorted((cos(e, c) for c in cohort), reverse=True)[:7]
    top_t = sorted((cos(t, c) for c in cohort), reverse=True)[:7]
    want = 0.5 * ((s - np.mean(top_e)) / np.std(top_e) + (s - np.mean(top_t)) / np.std(top_t))
    assert raw[0] == pytest.approx(s, abs=1e-12)
    assert got[0] == pytest.approx(want, abs=1e-10)
    # S-norm: the whole cohort.
    snorm = normalise(backend, raw, sides[0], rows_e, sides[1], rows_t, sides[2], top_n=40)
    all_e = [cos(e, c) for c in cohort]
    all_t = [cos(t, c) for c in cohort]
    assert snorm[0] == pytest.approx(0.5 * ((s - np.mean(all_e)) / np.std(all_e)
                                            + (s - np.mean(all_t)) / np.std(all_t)), abs=1e-10)


def test_a_cohort_of_one_or_of_copies_is_refused():
    backend = CosineBackend()
    one = backend.side(Embeddings(["a"], np.ones((1, 4)), "c"))
    side = backend.side(Embeddings(["x"], np.arange(4.)[None] + 1, "x"))
    rows = np.array([0])
    with pytest.raises(TrialError, match="cohort of 1 embedding"):
        normalise(backend, np.zeros(1), side, rows, side, rows, one, top_n=1)
    copies = backend.side(Embeddings(["a", "b", "c"], np.ones((3, 4)), "c"))
    with pytest.raises(TrialError, match="standard deviation 0"):
        normalise(backend, np.zeros(1), side, rows, side, rows, copies, top_n=3)
    with pytest.raises(TrialError, match="--top_n must be between 2 and"):
        normalise(backend, np.zeros(1), side, rows, side, rows, copies, top_n=5)


def synthetic_speakers(rng, speakers, counts, between, within):
    dim = len(between)
    y = rng.multivariate_normal(np.zeros(dim), between, speakers)
    labels = np.repeat(np.arange(speakers), counts)
    x = y[labels] + rng.multivariate_normal(np.zeros(dim), within, len(labels))
    return x, labels


def test_plda_training_recovers_a_known_two_covariance_model():
    rng = np.random.default_rng(4)
    dim = 6
    q = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    between = q @ np.diag(rng.uniform(0.5, 3, dim)) @ q.T
    within = np.diag(rng.uniform(0.2, 1, dim))
    counts = rng.integers(1, 9, 3000)  # unbalanced, single-utterance speakers too
    x, labels = synthetic_speakers(rng, 3000, counts, between, within)
    x += 5.0
    mu, b, w = plda.fit_two_covariance(x, labels, 3000, iterations=20)
    assert np.abs(mu - 5.0).max() < 0.1
    assert np.abs(b - between).max() / np.abs(between).max() < 0.08
    assert np.abs(w - within).max() / np.abs(within).max() < 0.05


def joint_llr(model, enroll, test):
    """log p(enroll..., test | one speaker) - log p(enroll... | one) - log p(test | one): the
    two-covariance model's Gaussians written out in full."""
    b, w, mu = model.between, model.within, model.mu

    def log_same(vectors):
        n = len(vectors)
        cov = np.kron(np.ones((n, n)), b) + np.kron(np.eye(n), w)
        return multivariate_normal(np.tile(mu, n), cov).logpdf(np.concatenate(vectors))

    return log_same(list(enroll) + [test]) - log_same(list(enroll)) - log_same([test])


def test_plda_scores_equal_the_two_covariance_likelihood_ratio():
    rng = np.random.default_rng(5)
    dim = 5
    x, labels = synthetic_speakers(rng, 40, np.full(40, 6), np.diag(rng.uniform(1, 2, dim)),
                                   np.eye(dim) * 0.5)
    x = np.c_[x, rng.normal(size=(len(x), 3))]  # 8-d embeddings, LDA to 4
    ids = [f"u{k:03d}" for k in range(len(x))]
    utt2spk = {u: f"s{labels[k]:02d}" for k, u in enumerate(ids)}
    model = plda.train(Embeddings(ids, x, "train"), utt2spk, lda_dim=4)
    assert model.info["lda_dim"] == 4
    backend = plda.PldaBackend(model)
    embeddings = Embeddings(ids, x, "train")
    singles = backend.side(embeddings)
    groups = {"s00": ids[:3], "s05": ids[30:33]}  # enrollments of three utterances
    enrolled = backend.side(embeddings, groups)
    pre = model.preprocess(x)
    for a, b in [(0, 1), (0, 7), (12, 13), (12, 50)]:
        got = backend.score_pairs(singles, np.array([a]), singles, np.array([b]))[0]
        assert got == pytest.approx(joint_llr(model, [pre[a]], pre[b]), rel=1e-8, abs=1e-8)
    matrix = backend.score_matrix(enrolled, singles)
    for g, (name, members) in enumerate(groups.items()):
        for b in (4, 40):
            want = joint_llr(model, pre[[ids.index(m) for m in members]], pre[b])
            assert matrix[g, b] == pytest.approx(want, rel=1e-8, abs=1e-8)
            pair = backend.score_pairs(enrolled, np.array([g]), singles, np.array([b]))[0]
            assert pair == pytest.approx(want, rel=1e-8, abs=1e-8)


@pytest.mark.kernels
def test_a_plda_model_is_stored_and_a_wrong_file_refused(tmp_path):
    rng = np.random.default_rng(6)
    x, labels = synthetic_speakers(rng, 10, np.full(10, 3), np.eye(4), np.eye(4) * 0.3)
    ids = [f"u{k}" for k in range(len(x))]
    model = plda.train(Embeddings(ids, x, "train.scp"), {u: str(labels[k])
                                                         for k, u in enumerate(ids)})
    model.save(str(tmp_path / "plda.npz"))
    again = plda.PldaModel.load(str(tmp_path / "plda.npz"))
    for name in plda.ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))
    assert again.info == model.info and again.info["lda_dim"] == 4
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(TrialError, match="is not a PLDA model"):
        plda.PldaModel.load(str(tmp_path / "other.npz"))
    with pytest.raises(TrialError, match="dimension 5 given to a PLDA model trained on "
                                         "dimension 4"):
        again.preprocess(np.zeros((1, 5)))
    with pytest.raises(TrialError, match="two speakers or more"):
        plda.train(Embeddings(ids[:3], x[:3], "one.scp"), {u: "s" for u in ids})


def write(path, text):
    path.write_text(text)
    return str(path)


def test_trial_forms(tmp_path):
    kaldi = read_trials(write(tmp_path / "k", "a b target\na c nontarget\n\n"))
    assert (kaldi.enroll, kaldi.test, list(kaldi.is_target)) == (["a", "a"], ["b", "c"],
                                                                [True, False])
    wav_scp = {"id1-v1-00001": "/corpus/wav/id1/v1/00001.wav",
               "id2-v9-00003": "sox /corpus/wav/id2/v9/00003.wav -t wav - |"}
    vox = read_trials(write(tmp_path / "v", "1 id1/v1/00001.wav id2/v9/00003.wav\n"
                                            "0 id2/v9/00003.wav id1-v1-00001\n"), wav_scp)
    assert vox.enroll == ["id1-v1-00001", "id2-v9-00003"]
    assert vox.test == ["id2-v9-00003", "id1-v1-00001"]
    assert list(vox.is_target) == [True, False]
    unlabelled = read_trials(write(tmp_path / "u", "a b\nb c\n"))
    assert unlabelled.is_target is None and unlabelled.ids() == ["a", "b", "c"]


@pytest.mark.parametrize("text,wav_scp,message", [
    ("a b target\na b maybe\n", None, r"t:2: 'a b maybe' is not a trial"),
    ("a b c d\n", None, r"t:1: 'a b c d' is not a trial"),
    ("a b target\n1 a b\n", None, r"t:2: a voxceleb trial in a list of kaldi trials"),
    ("1 id1/v1/x.wav id1/v1/y.wav\n", {"u": "/c/id1/v1/x.wav"},
     r"1 trial names are neither embedding ids nor files of the data dir's wav.scp "
     r"\(--data_dir\); the first: id1/v1/y.wav"),
    ("1 v1/x.wav v1/x.wav\n", None, "no wav.scp to map paths with"),
    ("1 v1/x.wav v1/x.wav\n", {"u": "/a/v1/x.wav", "w": "/b/v1/x.wav"},
     "end the files of several wav.scp entries; the first: v1/x.wav"),
    ("\n", None, "holds no trials"),
])
def test_malformed_trials_are_named(tmp_path, text, wav_scp, message):
    with pytest.raises(TrialError, match=message):
        read_trials(write(tmp_path / "t", text), wav_scp)
