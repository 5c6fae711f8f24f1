"""Merging job scps, aligning with text, and the checks on the result."""

import numpy as np
import pytest

from speechdump.align import AlignmentError, align, merge_scps, require_complete, validate_scp
from speechdump.kaldi_io import write_ark_scp
from speechdump.speaker import speaker_means


def test_merge_refuses_an_id_in_two_jobs(tmp_path):
    (tmp_path / "a.scp").write_text("u1 a.ark:5\nu2 a.ark:40\n")
    (tmp_path / "b.scp").write_text("u3 b.ark:5\nu2 b.ark:40\n")
    with pytest.raises(AlignmentError, match="'u2' is in both .*a.scp and .*b.scp"):
        merge_scps([tmp_path / "a.scp", tmp_path / "b.scp"])


def test_align_follows_the_reference_order_and_reports_differences():
    entries = {"c": "x:3", "a": "x:1", "extra": "x:9", "b": "x:2"}
    result = align(entries, ["a", "b", "c", "gone"])
    assert result.entries == [("a", "x:1"), ("b", "x:2"), ("c", "x:3")]
    assert result.dropped == ["extra"]
    assert result.missing == ["gone"]
    with pytest.raises(AlignmentError, match="1 ids have no output: gone"):
        require_complete(result)
    require_complete(result, excused={"gone": "corrupt file"})


def _scp(tmp_path, arrays):
    write_ark_scp(str(tmp_path / "v.ark"), str(tmp_path / "v.scp"), arrays)
    return str(tmp_path / "v.scp")


def test_validate_accepts_aligned_vectors(tmp_path):
    scp = _scp(tmp_path, {"a": np.ones(8, np.float32), "b": np.zeros(8, np.float32)})
    assert validate_scp(scp, ["a", "b"]) == (8,)


@pytest.mark.parametrize("arrays, reference, message", [
    ({"a": np.ones(8, np.float32), "b": np.ones(7, np.float32)}, ["a", "b"], "'b' has shape"),
    ({"a": np.ones(8, np.float32), "b": np.array([np.nan] * 8, np.float32)}, ["a", "b"], "NaN"),
    ({"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}, ["b", "a"], "line 1"),
    ({"a": np.ones(8, np.float32)}, ["a", "b"], "1 ids, 2 expected"),
])
def test_validate_names_what_does_not_line_up(tmp_path, arrays, reference, message):
    with pytest.raises(AlignmentError, match=message):
        validate_scp(_scp(tmp_path, arrays), reference)


@pytest.mark.parametrize("bad", [0, 3, 4095, 4096, 6999])
def test_validate_names_the_first_array_that_is_not_finite(tmp_path, bad):
    # Checked a chunk of 4096 at a time: the id named is still the first bad one, in any chunk,
    # and before a later shape error in the same chunk.
    arrays = {f"u{i:05d}": np.full(4, i, np.float32) for i in range(7000)}
    arrays[f"u{bad:05d}"][2] = np.inf if bad % 2 else np.nan
    if bad < 6999:
        arrays[f"u{bad + 1:05d}"] = np.ones(5, np.float32)
    with pytest.raises(AlignmentError, match=f"'u{bad:05d}' holds NaN or Inf"):
        validate_scp(_scp(tmp_path, arrays), list(arrays))


def test_validate_finds_duplicate_lines(tmp_path):
    scp = _scp(tmp_path, {"a": np.ones(3, np.float32)})
    with open(scp, "a") as f:
        f.write(open(scp).read())
    with pytest.raises(AlignmentError, match="duplicate ids: a"):
        validate_scp(scp, ["a", "a"])


def test_speaker_means_span_any_order_and_are_normalised():
    vectors = [("s1-a", np.array([1.0, 0.0])), ("s2-a", np.array([0.0, 2.0])),
               ("s1-b", np.array([0.0, 1.0]))]
    means = speaker_means(vectors, {"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"})
    assert list(means) == ["s1", "s2"]
    np.testing.assert_allclose(means["s1"], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    raw = speaker_means(vectors, {"s1-a": "s1", "s1-b": "s1", "s2-a": "s2"}, normalize=False)
    np.testing.assert_allclose(raw["s1"], [0.5, 0.5])
    np.testing.assert_allclose(raw["s2"], [0.0, 2.0])
