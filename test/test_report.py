"""EER and the report figure."""

import numpy as np
import pytest

from speechdump.report import equal_error_rate, plot, report_sample, summarize


def test_eer_of_separable_scores_is_zero():
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    same = np.array([True, True, False, False, False])
    eer, threshold = equal_error_rate(scores, same)
    assert eer == 0.0
    assert 0.3 <= threshold <= 0.8


def test_eer_of_interleaved_scores():
    # Thresholds sweep: one of four same pairs falls below one of four different pairs.
    scores = np.array([0.9, 0.8, 0.7, 0.65, 0.6, 0.3, 0.2, 0.1])
    same = np.array([True, True, True, False, True, False, False, False])
    eer, _ = equal_error_rate(scores, same)
    assert eer == pytest.approx(0.25)


def test_eer_of_inverted_scores_is_one():
    eer, _ = equal_error_rate(np.array([0.9, 0.1]), np.array([False, True]))
    assert eer == pytest.approx(1.0)


def test_eer_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError, match="both"):
        equal_error_rate(np.array([0.9, 0.8]), np.array([True, True]))


def test_summary_and_figure(tmp_path):
    rng = np.random.default_rng(0)
    centres = {spk: rng.normal(size=16) for spk in ("a", "b", "c")}
    vectors, utt2spk = {}, {}
    for spk, centre in centres.items():
        for i in range(4):
            vectors[f"{spk}-{i}"] = centre + 0.1 * rng.normal(size=16)
            utt2spk[f"{spk}-{i}"] = spk
    report = summarize(vectors, utt2spk)
    assert (report.utterances, report.speakers) == (12, 3)
    assert report.same[3] == 3 * 6 and report.diff[3] == 66 - 18
    assert report.eer == 0.0 and report.same[0] > report.diff[0]
    assert "EER over all utterance pairs: 0.00 %" in report.text()
    png = tmp_path / "r.png"
    plot(vectors, utt2spk, {s: c for s, c in centres.items()}, "title", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_summary_of_one_speaker_has_no_eer_and_says_why(tmp_path):
    """A single-speaker TTS corpus: same-speaker statistics only, the figure still drawn."""
    rng = np.random.default_rng(1)
    centre = rng.normal(size=16)
    vectors = {f"lj-{i}": centre + 0.1 * rng.normal(size=16) for i in range(5)}
    utt2spk = {utt: "lj" for utt in vectors}
    report = summarize(vectors, utt2spk)
    assert (report.utterances, report.speakers, report.eer, report.diff) == (5, 1, None, None)
    assert report.same[3] == 10
    text = report.text().splitlines()
    assert text[1] == "EER: not computed: EER needs two speakers or more; this set has 1 " \
                      "(5 utterances)"
    assert text[2].startswith("same-speaker cosine:      mean ") and text[2].endswith("(10 pairs)")
    assert text[3] == "different-speaker cosine: no pairs (one speaker)"
    png = tmp_path / "one.png"
    plot(vectors, utt2spk, {"lj": centre}, "one speaker", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_of_one_utterance_per_speaker_and_of_one_utterance(tmp_path):
    rng = np.random.default_rng(2)
    vectors = {f"s{i}-0": rng.normal(size=8) for i in range(3)}
    utt2spk = {utt: utt[:2] for utt in vectors}
    report = summarize(vectors, utt2spk)
    assert (report.eer, report.same, report.diff[3]) == (None, None, 3)
    assert "EER: not computed: EER needs a speaker with two utterances or more" in report.text()
    assert "same-speaker cosine:      no pairs (no speaker has two utterances)" in report.text()
    one = {"s0-0": vectors["s0-0"]}
    report = summarize(one, utt2spk)
    assert (report.utterances, report.same, report.diff) == (1, None, None)
    png = tmp_path / "single.png"
    plot(one, utt2spk, {"s0": one["s0-0"]}, "one utterance", str(png))
    assert png.stat().st_size > 0


def test_a_large_set_is_reported_on_a_fixed_sample_of_whole_speakers():
    utt2spk = {f"s{s:03d}-u{u:02d}": f"s{s:03d}" for s in range(300) for u in range(20)}
    ids = list(utt2spk)
    assert report_sample(ids[:100], utt2spk, 3000) == ids[:100]  # small: all of it
    sample = report_sample(ids, utt2spk, 3000)
    assert len(sample) == 3000 and sample == sorted(sample)
    speakers = {utt2spk[u] for u in sample}
    assert len(speakers) == 300  # up to 10 of each speaker drawn: here all of them, 10 each
    assert all(sum(utt2spk[u] == s for u in sample) == 10 for s in list(speakers)[:5])
    assert report_sample(ids, utt2spk, 3000) == sample  # fixed seed
    small = report_sample(ids, utt2spk, 95)
    assert len(small) == 95 and len({utt2spk[u] for u in small}) == 10
