"""Jobs by shard: a shard's utterances go to one job, in the order they lie in the shard,
whatever order their ids sort in; parts balanced by audio as split_scp.pl balances them."""

import subprocess
import tarfile

import pytest

from conftest import REPO, run_feats_stage
from speechdump.corpora import import_corpus
from speechdump.data import read_table
from speechdump.errors import DataDirError
from speechdump.split import plan
from test_containers import FBANK, add_member, samples


def lines(entries):
    return [f"{utt} {entry}\n" for utt, entry in entries]


@pytest.mark.parametrize("durations", [None, [1, 1, 1, 1, 10, 1, 2]])
def test_plain_entries_split_as_split_scp_does(tmp_path, durations):
    todo = lines((f"u{i}", f"/a/{i}.wav") for i in range(7))
    (tmp_path / "todo").write_text("".join(todo))
    options = []
    if durations:
        (tmp_path / "utt2dur").write_text("".join(f"u{i} {d}\n" for i, d in enumerate(durations)))
        options = ["--utt2dur", str(tmp_path / "utt2dur")]
    outs = [str(tmp_path / f"part.{n}") for n in range(3)]
    subprocess.run([str(REPO / "utils" / "split_scp.pl"), *options, str(tmp_path / "todo"),
                    *outs], check=True)
    want = [open(out).readlines() for out in outs]
    utt2dur = {f"u{i}": str(d) for i, d in enumerate(durations)} if durations else None
    assert plan(todo, 3, utt2dur=utt2dur).parts == want


def test_a_shard_goes_to_one_job_in_the_order_it_lies_there():
    # Ids sort across two shards, and against the members' order inside each.
    todo = lines([("a1", "tar:/s/one.tar:3072:10"), ("a2", "tar:/s/two.tar:512:10"),
                  ("b1", "tar:/s/one.tar:512:10"), ("b2", "tar:/s/two.tar:2048:10"),
                  ("c1", "tar:/s/one.tar:1536:10"), ("d", "/plain/d.wav")])
    result = plan(todo, 2)
    assert result.shards == 2 and not result.shards_cut
    ids = [[line.split()[0] for line in part] for part in result.parts]
    assert ids == [["b1", "c1", "a1"], ["a2", "b2", "d"]]


def test_gzipped_members_and_parquet_rows_keep_their_place():
    todo = lines([("x", "tar:/s/a.tar.gz:2:x.flac"), ("y", "tar:/s/a.tar.gz:0:y.flac"),
                  ("z", "parquet:/p/f.parquet:1:0"), ("w", "parquet:/p/f.parquet:0:3")])
    ids = [[line.split()[0] for line in part] for part in plan(todo, 2).parts]
    assert ids == [["y", "x"], ["w", "z"]]


def test_fewer_shards_than_jobs_cuts_shards_still_in_order():
    todo = lines((f"u{9 - i}", f"tar:/s/one.tar:{512 * (i + 1)}:10") for i in range(6))
    result = plan(todo, 3)
    assert result.shards == 1 and result.shards_cut
    assert [[line.split()[0] for line in part] for part in result.parts] == [
        ["u9", "u8"], ["u7", "u6"], ["u5", "u4"]]


def test_segments_of_a_shard_member_follow_the_member_then_the_start():
    recordings = {"r1": "tar:/s/one.tar:2048:10", "r2": "tar:/s/one.tar:512:10"}
    todo = ["r1-a r1 5.0 6.0\n", "r1-b r1 1.0 2.0\n", "r2-a r2 0.0 1.0\n"]
    result = plan(todo, 1, recordings=recordings)
    assert [line.split()[0] for line in result.parts[0]] == ["r2-a", "r1-b", "r1-a"]
    with pytest.raises(DataDirError, match="recording 'r3' of 'x' is not in wav.scp"):
        plan(["x r3 0 1\n"], 1, recordings=recordings)


def test_the_stage_gives_each_job_whole_shards_read_in_order(tmp_path, stage_env):
    """Two gzipped shards whose ids interleave, members in reverse id order: each job holds
    one shard, in member order, and the features are those of the plain run."""
    items = samples()
    shards = []
    for n, half in enumerate((items[0::2], items[1::2])):
        path = tmp_path / "shards" / f"part-{n}.tar.gz"
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            for utt, audio, _, _ in reversed(half):
                add_member(tar, f"{utt}{audio.suffix}", audio.read_bytes())
        shards.append((path, [utt for utt, *_ in reversed(half)]))
    data = tmp_path / "data"
    import_corpus("webdataset", [str(tmp_path / "shards")], str(data))
    proc = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env)
    assert "6 utterances in 2 shards over 2 jobs: each shard is read by one job, in order" in (
        proc.stderr)
    for job, (_, order) in enumerate(shards, start=1):
        assert list(read_table(tmp_path / "out" / "split2" / f"input.{job}")) == order
    assert list(read_table(tmp_path / "out" / "feats.scp")) == sorted(u for u, *_ in items)
