"""Corpora read where they lie: WebDataset tar shards (plain and gzipped), Hugging Face parquet
files and Lhotse cut manifests imported as data dirs (pyscripts/import_corpus.py), their entries
decoded from memory exactly as the files they were packed from, the stage's outputs equal to a
plain wav.scp run, bad members named, and a changed shard redoing its job."""

import io
import json
import subprocess
import sys
import tarfile

import kaldiio
import numpy as np
import pytest

from conftest import REPO, SAMPLES, make_data_dir, read_pairs, run_feats_stage
from speechdump import containers
from speechdump.audio import read_samples
from speechdump.corpora import import_corpus
from speechdump.data import Utterance, read_table
from speechdump.errors import DataDirError

# FLAC, MP3, WAV; 16 to 48 kHz; the stereo clip; two speakers with two utterances each.
UTTS = ["arctic-aew-a0001", "arctic-aew-a0002", "jfk-inaugural1961", "ljspeech-lj-002-0020",
        "vctk-p225-003", "vctk-p238-165"]
FBANK = ["--toolkit", "fbank", "--nj", 2]


def samples():
    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    speakers = dict(read_pairs(SAMPLES / "utt2spk"))
    texts = dict(read_pairs(SAMPLES / "text"))
    return [(utt, SAMPLES / wav[utt], speakers[utt], texts.get(utt)) for utt in UTTS]


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack_webdataset(dest, compressed=False, per_shard=3):
    """The samples as WebDataset shards: ``<utt>.<ext>`` and ``<utt>.json`` per utterance."""
    dest.mkdir(parents=True, exist_ok=True)
    items = samples()
    shards = []
    for n in range(0, len(items), per_shard):
        path = dest / f"shard-{n // per_shard:03d}.tar{'.gz' if compressed else ''}"
        with tarfile.open(path, "w:gz" if compressed else "w") as tar:
            for utt, audio, speaker, text in items[n:n + per_shard]:
                add_member(tar, f"{utt}{audio.suffix}", audio.read_bytes())
                add_member(tar, f"{utt}.json",
                           json.dumps({"speaker": speaker, "text": text}).encode())
        shards.append(path)
    return shards


def pack_parquet(dest, rows_per_group=4):
    """The samples as one parquet file of Hugging Face datasets' layout, in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest.mkdir(parents=True, exist_ok=True)
    items = samples()
    table = pa.table({
        "id": [utt for utt, *_ in items],
        "audio": [{"bytes": audio.read_bytes(), "path": audio.name} for _, audio, *_ in items],
        "speaker_id": [speaker for _, _, speaker, _ in items],
        "text": [text for *_, text in items],
    })
    path = dest / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=rows_per_group)
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """{format: (data dir, shards)} of the samples packed and imported three ways."""
    base = tmp_path_factory.mktemp("corpora")
    packed = {"tar": ("webdataset", pack_webdataset(base / "tar")),
              "tar.gz": ("webdataset", pack_webdataset(base / "tgz", compressed=True)),
              "parquet": ("hf", [pack_parquet(base / "parquet")])}
    out = {}
    for name, (kind, shards) in packed.items():
        import_corpus(kind, [str(shards[0].parent)], str(base / "data" / name))
        out[name] = (base / "data" / name, shards)
    return out


@pytest.mark.parametrize("name", ["tar", "tar.gz", "parquet"])
def test_import_writes_a_kaldi_data_dir_pointing_into_the_shards(corpora, name):
    data, shards = corpora[name]
    wav = read_table(data / "wav.scp")
    assert list(wav) == sorted(UTTS)
    prefix = {"tar": "tar:", "tar.gz": "tar:", "parquet": "parquet:"}[name]
    assert all(entry.startswith(prefix) for entry in wav.values())
    speakers = {utt: speaker for utt, _, speaker, _ in samples()}
    assert read_table(data / "utt2spk") == {u: speakers[u] for u in sorted(UTTS)}
    texts = {utt: " ".join(text.split()) for utt, *_, text in samples() if text}
    assert read_table(data / "text") == dict(sorted(texts.items()))
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-spk-sort", str(data)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.kernels
@pytest.mark.parametrize("name", ["tar", "tar.gz", "parquet"])
def test_entries_decode_to_the_samples_of_the_packed_files(corpora, name):
    assert_entries_decode_as_files(corpora[name][0])


def assert_entries_decode_as_files(data):
    """Every wav.scp entry of ``data`` decodes to exactly the samples of its sample file."""
    files = {utt: audio for utt, audio, *_ in samples()}
    # Out of order for the gzipped shards: members behind the stream's place are read again.
    for utt, entry in reversed(list(read_table(data / "wav.scp").items())):
        got, rate = read_samples(Utterance(utt, entry))
        want, want_rate = read_samples(Utterance(utt, str(files[utt])))
        assert rate == want_rate
        np.testing.assert_array_equal(got, want, err_msg=utt)


def test_a_gzipped_shard_is_streamed_once_when_read_in_order(corpora, monkeypatch):
    data, _ = corpora["tar.gz"]
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(containers, "_STREAMS", containers._TarStreams())
    monkeypatch.setattr(containers.tarfile, "open",
                        lambda path, mode="r", **kw: opened.append(path) or real_open(path, mode,
                                                                                      **kw))
    for utt, entry in read_table(data / "wav.scp").items():
        read_samples(Utterance(utt, entry))
    assert len(opened) == len(set(opened)) == 2  # two shards, each opened once


def test_a_streamed_shard_does_not_keep_the_members_it_passed(tmp_path):
    """tarfile lists every member a stream passes; a shard of a million members would hold
    them all while it is read."""
    audio = (SAMPLES / dict(read_pairs(SAMPLES / "wav.scp"))[UTTS[0]]).read_bytes()
    path = tmp_path / "many.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(3000):
            add_member(tar, f"k{i:05d}.json", b"{}")
        add_member(tar, "last.wav", audio)
    shard = containers._Shard(str(path), keep=4)
    assert shard.take(3000, "last.wav") == audio
    assert len(shard.stream.members) <= 1
    shard.close()


@pytest.mark.kernels
@pytest.mark.parametrize("name", ["tar", "tar.gz", "parquet"])
def test_the_stage_on_shards_equals_the_plain_run_bit_for_bit(corpora, name, tmp_path, stage_env):
    data, _ = corpora[name]
    plain = make_data_dir(tmp_path / "plain", keep=set(UTTS))
    run_feats_stage([*FBANK, plain, tmp_path / "plain_out"], stage_env)
    proc = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env)
    assert f"{len(UTTS)} utterances" in proc.stdout
    want = list(kaldiio.load_scp_sequential(str(tmp_path / "plain_out" / "feats.scp")))
    got = list(kaldiio.load_scp_sequential(str(tmp_path / "out" / "feats.scp")))
    assert [k for k, _ in got] == [k for k, _ in want] == sorted(UTTS)
    # Bit for bit: the same samples, features computed per utterance on one thread.
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))


def test_a_changed_shard_redoes_its_job_only(tmp_path, stage_env):
    shards = pack_webdataset(tmp_path / "tar")
    data = tmp_path / "data"
    import_corpus("webdataset", [str(tmp_path / "tar")], str(data))
    out = tmp_path / "out"
    run_feats_stage([*FBANK, data, out], stage_env)
    # Shard 1 packed again with its first recording replaced by another of the same length.
    first = read_table(data / "wav.scp")[UTTS[3]]
    with tarfile.open(shards[1]) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    with tarfile.open(shards[1], "w") as tar:
        for member, content in members:
            if member == f"{UTTS[3]}.wav":
                content = content[:44] + bytes(len(content) - 44)  # silence, same size
            add_member(tar, member, content)
    assert read_table(data / "wav.scp")[UTTS[3]] == first  # same offsets: only the shard changed
    proc = run_feats_stage([*FBANK, data, out], stage_env)
    job = next(job for job in (1, 2) if UTTS[3] in read_table(out / "split2" / f"input.{job}"))
    assert f"job {job} ran: '{UTTS[3]}': the shard it reads was modified" in proc.stdout
    assert f"jobs reused, nothing they depend on changed: {3 - job}" in proc.stdout


@pytest.mark.kernels
def test_a_changed_parquet_file_redoes_the_jobs_that_read_it(tmp_path, stage_env):
    import pyarrow.parquet as pq

    path = pack_parquet(tmp_path / "parquet")
    data = tmp_path / "data"
    import_corpus("hf", [str(path.parent)], str(data))
    out = tmp_path / "out"
    run_feats_stage([*FBANK, data, out], stage_env)
    again = run_feats_stage([*FBANK, data, out], stage_env).stdout
    assert "all 2 jobs reused: nothing they depend on changed since they ran" in again
    # The same rows and row groups, one recording's bytes replaced by another's.
    table = pq.read_table(path)
    audio = table.column("audio").to_pylist()
    audio[1] = dict(audio[0])
    pq.write_table(table.set_column(1, "audio", [audio]), path, row_group_size=4)
    import_corpus("hf", [str(path.parent)], str(tmp_path / "again"))
    assert read_table(tmp_path / "again" / "wav.scp") == read_table(data / "wav.scp")
    proc = run_feats_stage([*FBANK, data, out], stage_env)
    for job in (1, 2):  # one file for two jobs: cut between them, both read it
        first = next(iter(read_table(out / "split2" / f"input.{job}")))
        assert f"job {job} ran: '{first}': the shard it reads changed (size" in proc.stdout
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    np.testing.assert_array_equal(feats[UTTS[1]], feats[UTTS[0]])  # the new bytes were read


def test_bad_members_are_named_and_skip_bad_keeps_the_rest(tmp_path, stage_env):
    shards = pack_webdataset(tmp_path / "tar")
    data = tmp_path / "data"
    import_corpus("webdataset", [str(tmp_path / "tar")], str(data))
    wav = read_table(data / "wav.scp")
    # A member that is not audio, and a tar cut short in the middle of a member.
    path, offset, size = wav[UTTS[0]][len("tar:"):].rsplit(":", 2)
    with open(path, "r+b") as f:
        f.seek(int(offset))
        f.write(b"not audio at all" * 4)
    last = max((u for u in wav if wav[u].startswith(f"tar:{shards[1]}:")),
               key=lambda u: int(wav[u].rsplit(":", 2)[1]))
    cut = int(wav[last].rsplit(":", 2)[1]) + 100
    with open(shards[1], "r+b") as f:
        f.truncate(cut)
    proc = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode != 0
    assert f"utterance '{UTTS[0]}' ({wav[UTTS[0]]}): cannot read audio" in proc.stderr
    proc = run_feats_stage([*FBANK, "--skip_bad", "true", data, tmp_path / "out"], stage_env)
    bad = read_table(tmp_path / "out" / "bad_utts")
    assert sorted(bad) == sorted([UTTS[0], last])
    assert "truncated" in bad[last] and str(shards[1]) in bad[last]
    kept = [k for k, _ in kaldiio.load_scp_sequential(str(tmp_path / "out" / "feats.scp"))]
    assert kept == sorted(set(UTTS) - {UTTS[0], last})


def test_a_parquet_file_is_opened_once_for_all_its_row_groups(tmp_path, monkeypatch):
    """Its footer is read once, not once per row group (bytes read stay those of the file)."""
    import pyarrow.parquet as pq

    path = pack_parquet(tmp_path / "parquet", rows_per_group=2)
    import_corpus("hf", [str(path.parent)], str(tmp_path / "data"))
    opened = []
    real = pq.ParquetFile

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", counting)
    wav = read_table(tmp_path / "data" / "wav.scp")
    assert len({entry.rsplit(":", 2)[1] for entry in wav.values()}) == 3  # row groups
    for utt in UTTS:
        assert read_samples(Utterance(utt, wav[utt]))[0].shape[0] > 0
    assert opened == [str(path)]


@pytest.mark.kernels
def test_a_row_group_a_loader_falls_behind_on_is_read_once(tmp_path, monkeypatch):
    """Loader threads ask a few rows at once, not always in order: one held up on the last row
    of a group while the others read on. Announced (as a job announces its utterances), the
    group is kept until that row is read, then dropped; not announced, the two groups read
    last are kept and the first is read twice."""
    path = pack_parquet(tmp_path / "parquet", rows_per_group=2)
    import_corpus("hf", [str(path.parent)], str(tmp_path / "data"))
    wav = read_table(tmp_path / "data" / "wav.scp")
    reads = []
    real = containers._read_audio_column
    monkeypatch.setattr(containers, "_read_audio_column",
                        lambda parquet, path, group: reads.append(group) or real(parquet, path,
                                                                                group))
    # Ids in the file's order: groups 0, 0, 1, 1, 2, 2; the second row of group 0 read last.
    held_up = UTTS[:1] + UTTS[2:] + UTTS[1:2]
    expected = {utt: read_samples(Utterance(utt, wav[utt]))[0] for utt in UTTS}
    monkeypatch.setattr(containers, "_ROW_GROUPS", containers._RowGroups())  # nothing kept
    reads.clear()
    with containers.reading(wav[utt] for utt in UTTS):
        for utt in held_up:
            assert np.array_equal(read_samples(Utterance(utt, wav[utt]))[0], expected[utt])
    assert reads == [0, 1, 2]
    read_samples(Utterance(UTTS[5], wav[UTTS[5]]))  # its group was dropped once read
    assert reads == [0, 1, 2, 2]
    monkeypatch.setattr(containers, "_ROW_GROUPS", containers._RowGroups())
    reads.clear()
    for utt in held_up:
        read_samples(Utterance(utt, wav[utt]))
    assert reads == [0, 1, 2, 0]


def test_a_parquet_row_without_bytes_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "broken.parquet"
    audio = (SAMPLES / dict(read_pairs(SAMPLES / "wav.scp"))[UTTS[0]]).read_bytes()
    pq.write_table(pa.table({"id": ["good", "empty", "null"],
                             "audio": [{"bytes": audio, "path": "a.wav"},
                                       {"bytes": b"", "path": "b.wav"}, None]}), path)
    import_corpus("hf", [str(path)], str(tmp_path / "data"))
    wav = read_table(tmp_path / "data" / "wav.scp")
    assert read_samples(Utterance("good", wav["good"]))[0].shape[0] > 0
    with pytest.raises(ValueError, match=f"parquet file {path}, row group 0, row 1: the audio "
                                         "column holds no bytes"):
        read_samples(Utterance("empty", wav["empty"]))
    with pytest.raises(ValueError, match=f"parquet file {path}, row group 0, row 2: the audio "
                                         "column holds no bytes"):
        read_samples(Utterance("null", wav["null"]))


def test_import_refuses_what_it_cannot_map(tmp_path):
    shard = tmp_path / "a.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "x/one two.flac", b"")
        add_member(tar, "x/one_two.flac", b"")
    with pytest.raises(DataDirError, match="two utterances would get the id 'x_one_two': "
                                           "'x/one two' .* and 'x/one_two'"):
        import_corpus("webdataset", [str(shard)], str(tmp_path / "data"))
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "lonely.json", b"{}")
    with pytest.raises(DataDirError, match=f"tar shard {shard}, key 'lonely': no audio member"):
        import_corpus("webdataset", [str(shard)], str(tmp_path / "data"))
    with pytest.raises(DataDirError, match="nothing.tar: no .tar"):
        import_corpus("webdataset", [str(tmp_path / "nothing.tar")], str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, str(REPO / "pyscripts" / "import_corpus.py"),
                           "--format", "webdataset", str(shard), str(tmp_path / "data")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("ERROR: tar shard")
    assert not (tmp_path / "data" / "wav.scp").exists()


def test_malformed_entries_say_the_form():
    with pytest.raises(ValueError, match="is not tar:<shard.tar>:<offset>:<size>"):
        containers.parse("tar:/data/a.zip:1:2")
    with pytest.raises(ValueError, match="an uncompressed tar member is named by <offset>:<size>"):
        containers.parse("tar:/data/a.tar:member.flac")
    with pytest.raises(ValueError, match="is not parquet:<file.parquet>:<row group>:<row>"):
        containers.parse("parquet:/data/a.parquet:1")
    assert containers.parse("/data/a.tar") is None
    with pytest.raises(ValueError, match="named by <index>:<member>"):
        containers.parse("tar:/data/a.tar.gz:x.flac")
    entry = containers.parse("tar:/d/a.tar.gz:7:x/y:z.flac")
    assert (entry.index, entry.member) == (7, "x/y:z.flac")


def lhotse_cuts(dest):
    """Cuts over three sample recordings as LibriHeavy ships them: the 11 s stereo clip cut in
    two, two recordings whole; supervisions with text and speaker. Returns (manifest, cuts)."""
    from lhotse import CutSet, Recording, SupervisionSegment

    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    cuts = []
    for utt in ("jfk-inaugural1961", "arctic-aew-a0001", "vctk-p225-003"):
        whole = Recording.from_file(str(SAMPLES / wav[utt]), recording_id=utt).to_cut()
        pieces = ([whole.truncate(duration=5.5), whole.truncate(offset=5.5)]
                  if utt.startswith("jfk") else [whole])
        for n, piece in enumerate(pieces):
            piece = piece.with_id(f"{utt}-{n}")
            piece.supervisions = [SupervisionSegment(
                id=piece.id, recording_id=utt, start=0.0, duration=piece.duration,
                text=f"words of {piece.id}", speaker=utt.rsplit("-", 1)[0])]
            cuts.append(piece)
    manifest = dest / "cuts.jsonl.gz"
    dest.mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(manifest)
    return manifest, cuts


@pytest.mark.kernels
def test_lhotse_cuts_become_segments_of_their_recordings(tmp_path, stage_env):
    manifest, cuts = lhotse_cuts(tmp_path / "lhotse")
    data = tmp_path / "data"
    counts = import_corpus("lhotse", [str(manifest)], str(data))
    assert counts == {"utterances": 4, "speakers": 3, "texts": 4, "durations": 4}
    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    assert read_table(data / "wav.scp") == {u: str(SAMPLES / wav[u]) for u in sorted(
        ("jfk-inaugural1961", "arctic-aew-a0001", "vctk-p225-003"))}
    segments = read_table(data / "segments")
    assert segments["jfk-inaugural1961-0"] == "jfk-inaugural1961 0 5.5"
    assert segments["jfk-inaugural1961-1"] == "jfk-inaugural1961 5.5 11"
    assert read_table(data / "text")["jfk-inaugural1961-1"] == "words of jfk-inaugural1961-1"
    # Each segment decodes to the samples Lhotse itself loads for the cut.
    entries = read_table(data / "wav.scp")
    for cut in cuts:
        reco, start, end = segments[cut.id].split()
        got, _ = read_samples(Utterance(cut.id, entries[reco], float(start), float(end)))
        np.testing.assert_allclose(got.T, cut.load_audio(), atol=1e-6, err_msg=cut.id)
    proc = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env)
    assert "4 utterances" in proc.stdout


def test_lhotse_cuts_a_data_dir_cannot_hold_are_refused(tmp_path):
    from lhotse import CutSet, Recording

    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    stereo = Recording.from_file(str(SAMPLES / wav["jfk-inaugural1961"]))
    left = stereo.to_cut().to_mono()[0].with_id("left")  # channel 0 of 2
    manifest = tmp_path / "cuts.jsonl"
    CutSet.from_cuts([left]).to_file(manifest)
    with pytest.raises(DataDirError, match=f"Lhotse manifest {manifest}, cut left: channel 0 of "
                                           "2; a Kaldi data dir has no per-utterance channel"):
        import_corpus("lhotse", [str(manifest)], str(tmp_path / "data"))
