"""egs/sample_shards/spk1 end to end on the real speech samples: packed into each format with the
format's own writer (the files' bytes kept), imported where it lies, embedded with Resemblyzer,
and each format's outputs equal to the plain wav.scp run's bit for bit; stage 5 catches an
output that differs by one bit, and the packs are what their own readers (Lhotse) read."""

import json
import subprocess
import tarfile

import kaldiio
import numpy as np
import pytest

from conftest import REPO, SAMPLES, read_pairs
from speechdump.data import read_table

RECIPE = REPO / "egs" / "sample_shards" / "spk1"
FORMATS = ["wds_tar", "wds_tgz", "parquet", "hf_arrow", "shar", "nemo"]
PREFIX = {"wds_tar": "tar:", "wds_tgz": "tar:", "parquet": "parquet:", "hf_arrow": "arrow:",
          "shar": "tar:", "nemo": "tar:"}
WAV = {utt: SAMPLES / path for utt, path in read_pairs(SAMPLES / "wav.scp")}


def recipe(args, env, timeout=600):
    return subprocess.run(["./run.sh", *map(str, args)], cwd=RECIPE, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory, stage_env):
    """The recipe run once end to end (--nj 2) with its outputs under a temporary folder."""
    base = tmp_path_factory.mktemp("sample_shards")
    dirs = ["--datadir", base / "data", "--dumpdir", base / "dump"]
    proc = recipe(["--nj", 2, *dirs], stage_env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base, dirs, proc


def load(scp):
    return list(kaldiio.load_scp_sequential(str(scp)))


def assert_bit_for_bit(got, want, what):
    assert [k for k, _ in got] == [k for k, _ in want], what
    for (key, a), (_, b) in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {key}"
        assert a.tobytes() == b.tobytes(), f"{what}: {key}"


@pytest.mark.kernels
def test_each_format_gives_the_plain_runs_vectors_bit_for_bit(run):
    base, _, proc = run
    dump = base / "dump" / "resemblyzer"
    plain = {name: load(dump / "plain" / name) for name in ("resemblyzer.scp",
                                                            "spk_resemblyzer.scp")}
    assert [k for k, _ in plain["resemblyzer.scp"]] == sorted(WAV)  # all 26, transcribed or not
    assert len(plain["spk_resemblyzer.scp"]) == 13
    for fmt in FORMATS:
        # The data dir reads the packs where they lie, not the sample files.
        wav = read_table(base / "data" / fmt / "wav.scp")
        assert list(wav) == sorted(WAV)
        assert all(entry.startswith(PREFIX[fmt]) and str(base / "data" / "packed" / fmt) in entry
                   for entry in wav.values()), fmt
        for name, want in plain.items():
            assert_bit_for_bit(load(dump / fmt / name), want, f"{fmt} {name}")
        assert (f"{fmt}: equal to the plain run bit for bit (same ids, same vectors): 26 ids of "
                f"{dump / fmt / 'resemblyzer.scp'}, 13 ids of "
                f"{dump / fmt / 'spk_resemblyzer.scp'}\n") in proc.stdout
    assert "all 6 formats equal the plain run bit for bit" in proc.stdout


@pytest.mark.kernels
def test_the_packs_hold_the_files_bytes_and_their_readers_read_them(run):
    base, _, _ = run
    packed = base / "data" / "packed"
    files = {utt: path.read_bytes() for utt, path in WAV.items()}
    for fmt in ("wds_tar", "wds_tgz", "nemo", "shar"):
        members = {}
        for shard in sorted((packed / fmt).glob("*.tar*")):
            with tarfile.open(shard) as tar:
                members.update((m.name, tar.extractfile(m).read()) for m in tar if m.isfile())
        assert {name.rsplit(".", 1)[0]: data for name, data in members.items()
                if not name.endswith(".json")} == files, fmt
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in sorted((packed / "parquet").glob("*"))])
    assert dict(zip(table["id"].to_pylist(),
                    (a["bytes"] for a in table["audio"].to_pylist()))) == files
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta["info"]["features"]["audio"] == {"_type": "Audio"}
    # Lhotse reads the Shar pack: every cut's audio and speaker, as from the file.
    from lhotse import CutSet, Recording

    speakers = dict(read_pairs(SAMPLES / "utt2spk"))
    cuts = list(CutSet.from_shar(in_dir=str(packed / "shar")))
    assert [c.id for c in cuts] == sorted(WAV)
    for cut in cuts:
        assert cut.supervisions[0].speaker == speakers[cut.id]
        np.testing.assert_array_equal(cut.load_audio(),
                                      Recording.from_file(WAV[cut.id]).load_audio(),
                                      err_msg=cut.id)
    manifest = [json.loads(line) for line in
                (packed / "nemo" / "tarred_audio_manifest.json").read_text().splitlines()]
    assert [(line["audio_filepath"], line["speaker"]) for line in manifest] == \
        [(f"{utt}{WAV[utt].suffix}", speakers[utt]) for utt in sorted(WAV)]


def rewrite_scp(scp, change):
    """Writes ``change(list of (key, array))`` as a new ark and points ``scp`` at it."""
    entries = change([(key, np.array(value)) for key, value in load(scp)])
    kaldiio.save_ark(str(scp.with_suffix(".altered.ark")), dict(entries), scp=str(scp))


@pytest.mark.kernels
def test_stage_5_catches_an_output_one_bit_apart(run, stage_env):
    base, dirs, _ = run
    out = base / "dump" / "resemblyzer" / "nemo"
    saved = {name: (out / name).read_text() for name in ("resemblyzer.scp", "spk_resemblyzer.scp")}

    def one_ulp_up(entries):
        _, vector = entries[5]
        vector[17] = np.nextafter(vector[17], np.float32(np.inf))
        return entries

    try:
        rewrite_scp(out / "resemblyzer.scp", one_ulp_up)
        proc = recipe(["--stage", 5, "--nj", 2, *dirs], stage_env)
        assert proc.returncode == 1
        key = sorted(WAV)[5]
        assert (f"ERROR: nemo: {out / 'resemblyzer.scp'} differs from the plain run "
                f"({base / 'dump' / 'resemblyzer' / 'plain' / 'resemblyzer.scp'}; equal for its "
                f"first 5 ids): '{key}': ") in proc.stderr
        assert "ERROR: 1 format(s) differ from the plain run: nemo" in proc.stderr
        # The others are still compared, one line each.
        assert proc.stdout.count("equal to the plain run bit for bit") == len(FORMATS) - 1
        # A speaker missing from the speaker scp, and ids in another order: named.
        (out / "resemblyzer.scp").write_text(saved["resemblyzer.scp"])
        rewrite_scp(out / "spk_resemblyzer.scp", lambda entries: entries[:-1])
        proc = recipe(["--stage", 5, "--formats", "nemo", *dirs], stage_env)
        assert proc.returncode == 1
        assert "12 ids, the reference has 13: 'vctk-p314' and on are only in the reference" \
            in proc.stderr
        (out / "spk_resemblyzer.scp").write_text(saved["spk_resemblyzer.scp"])
        rewrite_scp(out / "spk_resemblyzer.scp", lambda entries: entries[1:] + entries[:1])
        proc = recipe(["--stage", 5, "--formats", "nemo", *dirs], stage_env)
        assert proc.returncode == 1
        assert "equal for its first 0 ids): line 1: id 'jfk', the reference has 'arctic-aew'" \
            in proc.stderr
    finally:
        for name, text in saved.items():
            (out / name).write_text(text)
    proc = recipe(["--stage", 5, "--formats", "nemo", *dirs], stage_env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--stage", 6], "ERROR: --stage 6: this recipe has stages 1 to 5"),
    (["--formats", "wds_tar webdataset"], "ERROR: --formats: unknown format 'webdataset'"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, stage_env, args, message):
    proc = recipe([*args, "--datadir", tmp_path / "data", "--dumpdir", tmp_path / "dump"],
                  stage_env)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "dump").exists()


def test_a_stage_before_its_inputs_says_which_stage_to_run(tmp_path, stage_env):
    proc = recipe(["--stage", 4, "--formats", "shar", "--datadir", tmp_path / "data",
                   "--dumpdir", tmp_path / "dump"], stage_env)
    assert proc.returncode == 1
    assert f"ERROR: {tmp_path}/data/shar/wav.scp is missing: run stage 3 first" in proc.stderr
