"""The fast scp reader: the same arrays as kaldiio for every record kind, and wrong lines caught."""

import kaldiio
import numpy as np
import pytest

from speechdump.ark_reader import ArkFormatError, read_scp_arrays
from speechdump.storage import ArkScpWriter

RNG = np.random.default_rng(0)
ARRAYS = {
    "vec32": RNG.standard_normal(256).astype(np.float32),
    "mat32": RNG.standard_normal((7, 80)).astype(np.float32),
    "vec64": RNG.standard_normal(5),
    "mat64": RNG.standard_normal((3, 4)),
    "half": RNG.standard_normal((6, 10)).astype(np.float16),  # kaldiio's NPY record
    "tokens": RNG.integers(0, 500, 40).astype(np.int32),
    "empty": np.zeros((0, 80), np.float32),
    "ütt-ß": np.arange(3, dtype=np.float32),  # non-ASCII key: offsets count bytes
}


def write(tmp_path, arrays, compress=False):
    ark, scp = tmp_path / "a.ark", tmp_path / "a.scp"
    with ArkScpWriter(str(ark), str(scp), compress=compress) as writer:
        for key, array in arrays.items():
            writer.write(key, array)
    return ark, scp


@pytest.mark.parametrize("compress", [False, True])
def test_same_arrays_as_kaldiio_for_every_record_kind(tmp_path, compress):
    # kaldiio cannot compress a matrix of no rows
    arrays = {k: v for k, v in ARRAYS.items() if not (compress and v.size == 0)}
    _, scp = write(tmp_path, arrays, compress)
    ours = list(read_scp_arrays(str(scp)))
    theirs = list(kaldiio.load_scp_sequential(str(scp)))
    assert [k for k, _ in ours] == [k for k, _ in theirs] == list(arrays)
    for (_, a), (_, b) in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_locations_with_a_slice_or_several_arks(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _, scp1 = write(tmp_path / "one", {"a": ARRAYS["mat32"]})
    _, scp2 = write(tmp_path / "two", {"b": ARRAYS["vec32"]})
    ark1 = scp1.read_text().split()[1]
    joined = tmp_path / "joined.scp"
    joined.write_text(scp2.read_text() + f"a {ark1}[2:4]\n" + scp1.read_text())
    got = list(read_scp_arrays(str(joined)))
    assert [k for k, _ in got] == ["b", "a", "a"]
    np.testing.assert_array_equal(got[1][1], ARRAYS["mat32"][2:5])  # Kaldi ranges: inclusive
    np.testing.assert_array_equal(got[2][1], ARRAYS["mat32"])


def test_a_line_pointing_at_another_record_is_caught(tmp_path):
    _, scp = write(tmp_path, {"first": ARRAYS["vec32"], "second": ARRAYS["vec32"]})
    lines = scp.read_text().splitlines()
    offset = lines[0].rsplit(":", 1)[1]
    scp.write_text(lines[0] + "\n" + f"second {lines[1].split()[1].rsplit(':', 1)[0]}:{offset}\n")
    with pytest.raises(ArkFormatError, match=r"a.scp:2: 'second' is not the record at byte"):
        list(read_scp_arrays(str(scp)))


def test_a_truncated_ark_is_caught(tmp_path):
    ark, scp = write(tmp_path, {"first": ARRAYS["vec32"], "second": ARRAYS["mat32"]})
    ark.write_bytes(ark.read_bytes()[:-10])
    with pytest.raises(ArkFormatError, match="runs past the end of the file"):
        list(read_scp_arrays(str(scp)))


def test_a_missing_ark_names_it(tmp_path):
    scp = tmp_path / "a.scp"
    scp.write_text(f"x {tmp_path}/gone.ark:4\n")
    with pytest.raises(FileNotFoundError, match="gone.ark"):
        list(read_scp_arrays(str(scp)))
