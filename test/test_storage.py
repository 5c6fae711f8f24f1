"""The ark/scp writer: readable output, and no scp before the job finished."""

import os

import kaldiio
import numpy as np
import pytest

from speechdump.storage import PARTIAL_SUFFIX, ArkScpWriter, write_ark_scp


def test_written_arrays_read_back(tmp_path):
    arrays = {"utt-a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "utt-b": np.ones(256, dtype=np.float32)}
    write_ark_scp(str(tmp_path / "x.ark"), str(tmp_path / "x.scp"), arrays)
    loaded = kaldiio.load_scp(str(tmp_path / "x.scp"))
    assert list(loaded) == ["utt-a", "utt-b"]
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_float16_and_int32_arrays_keep_their_type(tmp_path):
    arrays = {"half": np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4),
              "tokens": np.array([3, 1, 4, 1, 5], dtype=np.int32)}
    write_ark_scp(str(tmp_path / "x.ark"), str(tmp_path / "x.scp"), arrays)
    loaded = kaldiio.load_scp(str(tmp_path / "x.scp"))
    for key, array in arrays.items():
        assert loaded[key].dtype == array.dtype
        np.testing.assert_array_equal(loaded[key], array)


def test_scp_appears_only_on_commit(tmp_path):
    ark, scp = str(tmp_path / "j.ark"), str(tmp_path / "j.scp")
    writer = ArkScpWriter(ark, scp)
    writer.write("u1", np.zeros(4, dtype=np.float32))
    assert not os.path.exists(scp)  # a job killed now leaves no scp
    assert os.path.exists(scp + PARTIAL_SUFFIX)
    writer.commit()
    assert os.path.exists(scp) and not os.path.exists(scp + PARTIAL_SUFFIX)
    assert list(kaldiio.load_scp(scp)) == ["u1"]


def test_failure_inside_the_writer_leaves_no_scp(tmp_path):
    ark, scp = str(tmp_path / "j.ark"), str(tmp_path / "j.scp")
    with pytest.raises(RuntimeError):
        with ArkScpWriter(ark, scp) as writer:
            writer.write("u1", np.zeros(4, dtype=np.float32))
            raise RuntimeError("model crashed")
    assert not os.path.exists(scp)
    assert not os.path.exists(scp + PARTIAL_SUFFIX)


@pytest.mark.parametrize("key", ["", "has space", "tab\there"])
def test_keys_kaldi_cannot_store_are_refused(tmp_path, key):
    with ArkScpWriter(str(tmp_path / "j.ark"), str(tmp_path / "j.scp")) as writer:
        with pytest.raises(ValueError, match="whitespace"):
            writer.write(key, np.zeros(2, dtype=np.float32))
