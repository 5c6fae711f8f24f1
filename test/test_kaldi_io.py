"""Kaldi I/O (speechdump.kaldi_io): the writer (readable output, no scp before the job finished),
the fast scp reader (the same arrays as kaldiio for every record kind, wrong lines caught), the
header parser, the scp table and the per-entry reads."""

import os

import kaldiio
import numpy as np
import pytest

from speechdump.errors import ArkFormatError, DataDirError, ScpReadError
from speechdump.kaldi_io import (PARTIAL_SUFFIX, ArkScpWriter, load_entry,
                                 ark_offset, num_frames, read_scp_arrays, read_scp_table,
                                 record_header, write_ark_scp)


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


@pytest.mark.parametrize("compress", [False, True])
def test_num_frames_from_the_header_of_every_record_kind(tmp_path, compress):
    arrays = {k: v for k, v in ARRAYS.items() if not (compress and v.size == 0)}
    _, scp = write(tmp_path, arrays, compress)
    for key, location in read_scp_table(str(scp)).items():
        assert num_frames(location) == len(arrays[key]), key
    with open(tmp_path / "a.ark", "rb") as f:
        buf = f.read()
    mat = read_scp_table(str(scp))["mat32"]
    dtype, shape, _ = record_header(buf, ark_offset(mat)[1])
    assert shape == (7, 80)
    assert dtype == (None if compress else np.float32)  # compressed: kaldiio decodes it
    tokens = read_scp_table(str(scp))["tokens"]
    assert record_header(buf, ark_offset(tokens)[1]) is None  # an int vector


def test_a_header_cut_short_is_caught(tmp_path):
    ark, scp = write(tmp_path, {"m": ARRAYS["mat32"]})
    offset = int(scp.read_text().split(":")[-1])
    ark.write_bytes(ark.read_bytes()[:offset + 8])
    with pytest.raises(ArkFormatError, match=f"{ark}:{offset}: record at byte 0 runs past"):
        num_frames(f"{ark}:{offset}")


def test_ark_offsets_split_at_the_last_colon():
    assert ark_offset("/data/a:b/feats.ark:1234") == ("/data/a:b/feats.ark", 1234)
    for other in ("feats.ark:12[2:4]", "feats.ark", "copy-feats ark:- ark:- |", ":12", "a.ark:",
                  "a.ark:1x", "a.ark:\u0661\u0662"):
        assert ark_offset(other) is None, other


def test_scp_table_errors_name_the_file_and_id(tmp_path):
    with pytest.raises(ScpReadError, match=f"{tmp_path}/none.scp: no such file"):
        read_scp_table(str(tmp_path / "none.scp"))
    scp = tmp_path / "a.scp"
    scp.write_text("u1 a.ark:5\nu2\n")
    with pytest.raises(ScpReadError, match="a.scp: no location after id 'u2'"):
        read_scp_table(str(scp))
    scp.write_text("u1 a.ark:5\nu1 a.ark:9\n")
    with pytest.raises(DataDirError, match="a.scp:2: duplicate key 'u1'"):
        read_scp_table(str(scp))


def test_an_entry_is_read_alone_and_errors_name_it(tmp_path):
    arrays = {k: ARRAYS[k] for k in ("vec32", "mat32", "tokens", "half")}
    ark, scp = write(tmp_path, arrays)
    table = read_scp_table(str(scp))
    assert list(table) == list(arrays)
    for key, array in arrays.items():
        got = load_entry(table[key], key, str(scp))
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)
    location = table["mat32"]
    assert load_entry(location, "mat32", str(scp), writable=True).flags.writeable
    os.remove(ark)
    with pytest.raises(ScpReadError, match=f"cannot read utterance 'mat32' of {scp} from "
                                           f"'{ark}:\\d+': FileNotFoundError"):
        load_entry(location, "mat32", str(scp))


def test_compare_scp_fails_on_nan_against_a_number_and_passes_equal_infinities(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_scp", os.path.join(os.path.dirname(__file__), "..", "pyscripts",
                                    "compare_scp.py"))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    scps = {}
    for name, values in (("a", [1, 2, np.inf, np.nan]), ("b", [1, 2, np.inf, np.nan]),
                         ("c", [1, np.nan, np.inf, np.nan])):
        write_ark_scp(str(tmp_path / f"{name}.ark"), str(tmp_path / f"{name}.scp"),
                      {"u": np.array(values, np.float32)})
        scps[name] = str(tmp_path / f"{name}.scp")
    assert compare.main(["--tolerance", "0", scps["a"], scps["b"]]) == 0
    assert "max abs difference 0 (at u)" in capsys.readouterr().out
    assert compare.main(["--tolerance", "0", scps["a"], scps["c"]]) == 1
    assert "'u': NaN in one scp where the other has a number" in capsys.readouterr().err
