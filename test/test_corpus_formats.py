"""Lhotse Shar shards, NeMo tarred audio datasets and Hugging Face save_to_disk folders imported
as data dirs (pyscripts/import_corpus.py): entries into the shards they ship as, decoded from
memory exactly as the files they were packed from, the stage's outputs equal to a plain wav.scp
run, and what does not line up refused naming the manifest line, cut or file."""

import gzip
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
from test_containers import FBANK, UTTS, add_member, assert_entries_decode_as_files, samples

STEREO_24BIT = "jfk-inaugural1961"
# Lhotse's Shar writer stores 16-bit PCM: the 24-bit clip is not kept sample for sample, so it
# is checked against Lhotse's own reading of the shard instead (test_shar_cuts_...).
SHAR_UTTS = [u for u in UTTS if u != STEREO_24BIT]
DURATIONS = dict(read_pairs(SAMPLES / "utt2dur"))


def pack_shar(dest, utts=SHAR_UTTS, shard_size=3):
    """The samples as Lhotse's SharWriter writes them (FLAC), one cut per recording with a
    supervision carrying its text and speaker."""
    from lhotse import Recording, SupervisionSegment
    from lhotse.shar import SharWriter

    dest.mkdir(parents=True, exist_ok=True)
    with SharWriter(str(dest), fields={"recording": "flac"}, shard_size=shard_size) as writer:
        for utt, audio, speaker, text in samples():
            if utt not in utts:
                continue
            cut = Recording.from_file(str(audio), recording_id=utt).to_cut()
            cut.supervisions = [SupervisionSegment(id=utt, recording_id=utt, start=0.0,
                                                   duration=cut.duration, text=text,
                                                   speaker=speaker)]
            writer.write(cut)
    return dest


def pack_nemo(dest, per_shard=3):
    """The samples as NeMo's convert_to_tarred_audio_dataset.py lays them out: audio_<N>.tar
    holding each file under the name its manifest lines give (audio_filepath),
    tarred_audio_manifest.json over all shards (each line with its shard_id) and
    sharded_manifests/manifest_<N>.json."""
    (dest / "sharded_manifests").mkdir(parents=True, exist_ok=True)
    items = samples()
    shards = []
    for n in range(0, len(items), per_shard):
        shard = n // per_shard
        lines = []
        with tarfile.open(dest / f"audio_{shard}.tar", "w") as tar:
            for utt, audio, speaker, text in items[n:n + per_shard]:
                add_member(tar, f"{utt}{audio.suffix}", audio.read_bytes())
                lines.append({"audio_filepath": f"{utt}{audio.suffix}",
                              "duration": float(DURATIONS[utt]), "text": text or "",
                              "speaker": speaker, "shard_id": shard})
        write_json_lines(dest / "sharded_manifests" / f"manifest_{shard}.json", lines)
        shards.append(lines)
    write_json_lines(dest / "tarred_audio_manifest.json", [line for s in shards for line in s])
    return dest


def write_json_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def pack_saved_dataset(dest, files=2, rows_per_batch=2):
    """The samples as datasets' save_to_disk writes a Dataset with an Audio column: Arrow IPC
    streams data-0000k-of-0000N.arrow (record batches of a few rows), dataset_info.json and
    state.json listing the data files."""
    import pyarrow as pa

    dest.mkdir(parents=True, exist_ok=True)
    items = samples()
    features = {"id": {"dtype": "string", "_type": "Value"}, "audio": {"_type": "Audio"},
                "speaker_id": {"dtype": "string", "_type": "Value"},
                "text": {"dtype": "string", "_type": "Value"}}
    schema = pa.schema([("id", pa.string()),
                        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("speaker_id", pa.string()), ("text", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    per_file = -(-len(items) // files)
    names = []
    for k in range(files):
        part = items[k * per_file:(k + 1) * per_file]
        table = pa.table({"id": [utt for utt, *_ in part],
                          "audio": [{"bytes": audio.read_bytes(), "path": audio.name}
                                    for _, audio, *_ in part],
                          "speaker_id": [speaker for _, _, speaker, _ in part],
                          "text": [text for *_, text in part]}, schema=schema)
        names.append(f"data-{k:05d}-of-{files:05d}.arrow")
        with pa.OSFile(str(dest / names[-1]), "wb") as sink:
            with pa.ipc.new_stream(sink, schema) as writer:
                for batch in table.to_batches(max_chunksize=rows_per_batch):
                    writer.write_batch(batch)
    (dest / "dataset_info.json").write_text(json.dumps({"features": features}))
    (dest / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": name} for name in names], "_fingerprint": "0" * 16,
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
        "_output_all_columns": False, "_split": None}))
    return dest


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """{name: (data dir, utterances, wav.scp prefix)} of the samples packed and imported."""
    base = tmp_path_factory.mktemp("formats")
    nemo = pack_nemo(base / "nemo")
    packed = {"shar": ("shar", pack_shar(base / "shar"), SHAR_UTTS),
              "nemo": ("nemo", nemo, UTTS),
              "nemo-sharded": ("nemo", nemo / "sharded_manifests", UTTS),
              "arrow": ("hf", pack_saved_dataset(base / "saved"), UTTS)}
    out = {}
    for name, (kind, source, utts) in packed.items():
        import_corpus(kind, [str(source)], str(base / "data" / name))
        out[name] = (base / "data" / name, utts)
    return out


@pytest.fixture(scope="module")
def plain_feats(tmp_path_factory, stage_env):
    """{utt: fbank} of the stage run on the samples' own files (plain wav.scp)."""
    base = tmp_path_factory.mktemp("plain")
    plain = make_data_dir(base / "data", keep=set(UTTS))
    run_feats_stage([*FBANK, plain, base / "out"], stage_env)
    return dict(kaldiio.load_scp_sequential(str(base / "out" / "feats.scp")))


NAMES = ["shar", "nemo", "nemo-sharded", "arrow"]


@pytest.mark.parametrize("name", NAMES)
def test_import_writes_a_kaldi_data_dir_pointing_into_the_shards(corpora, name):
    data, utts = corpora[name]
    wav = read_table(data / "wav.scp")
    assert list(wav) == sorted(utts)
    prefix = "arrow:" if name == "arrow" else "tar:"
    assert all(entry.startswith(prefix) for entry in wav.values())
    assert not (data / "segments").exists()
    speakers = {utt: speaker for utt, _, speaker, _ in samples()}
    assert read_table(data / "utt2spk") == {u: speakers[u] for u in sorted(utts)}
    texts = {utt: " ".join(text.split()) for utt, *_, text in samples() if text}
    assert read_table(data / "text") == {u: texts[u] for u in sorted(utts) if u in texts}
    if name == "arrow":  # the dataset has no duration column
        assert not (data / "utt2dur").exists()
    else:
        durations = read_table(data / "utt2dur")
        assert list(durations) == sorted(utts)
        assert all(abs(float(durations[u]) - float(DURATIONS[u])) <= 0.001 for u in utts)
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-spk-sort", str(data)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_both_nemo_manifest_layouts_give_the_same_data_dir(corpora):
    for table in ("wav.scp", "utt2spk", "text", "utt2dur"):
        assert (read_table(corpora["nemo"][0] / table) ==
                read_table(corpora["nemo-sharded"][0] / table))


def test_a_relative_nemo_folder_reads_each_dataset_once(tmp_path, monkeypatch):
    """A folder holding both layouts, named relative to the working directory: the whole
    manifest is read, its shards' manifests are not read again (the same ids twice)."""
    pack_nemo(tmp_path / "nemo")
    import_corpus("nemo", [str(tmp_path / "nemo")], str(tmp_path / "absolute"))
    monkeypatch.chdir(tmp_path)
    import_corpus("nemo", ["nemo"], str(tmp_path / "relative"))
    for table in ("wav.scp", "utt2spk", "text", "utt2dur"):
        assert (read_table(tmp_path / "relative" / table)
                == read_table(tmp_path / "absolute" / table))


@pytest.mark.kernels
@pytest.mark.parametrize("name", NAMES)
def test_entries_decode_to_the_samples_of_the_packed_files(corpora, name):
    assert_entries_decode_as_files(corpora[name][0])


@pytest.mark.kernels
@pytest.mark.parametrize("name", ["shar", "nemo", "arrow"])
def test_the_stage_on_shards_equals_the_plain_run_bit_for_bit(corpora, name, plain_feats,
                                                             tmp_path, stage_env):
    data, utts = corpora[name]
    proc = run_feats_stage([*FBANK, data, tmp_path / "out"], stage_env)
    assert f"{len(utts)} utterances" in proc.stdout
    got = list(kaldiio.load_scp_sequential(str(tmp_path / "out" / "feats.scp")))
    assert [k for k, _ in got] == sorted(utts)
    # Bit for bit: the same samples, features computed per utterance on one thread.
    assert all(np.array_equal(feats, plain_feats[utt]) for utt, feats in got)


def test_shar_cuts_decode_as_lhotse_reads_them(tmp_path):
    """The 24-bit stereo clip Shar stores at 16 bits, and a cut narrowed after Shar wrote it
    (a segment of its member): the samples Lhotse loads from the shard."""
    from lhotse import CutSet

    shar = pack_shar(tmp_path / "shar", utts=[STEREO_24BIT, "vctk-p225-003"])
    cuts_path = shar / "cuts.000000.jsonl.gz"
    with gzip.open(cuts_path, "rt") as f:
        cuts = [json.loads(line) for line in f]
    cuts[1].update(start=1.25, duration=2.0)
    cuts[1]["supervisions"][0]["duration"] = 2.0
    with gzip.open(cuts_path, "wt") as f:
        f.writelines(json.dumps(cut) + "\n" for cut in cuts)
    data = tmp_path / "data"
    counts = import_corpus("shar", [str(shar)], str(data))
    assert counts == {"utterances": 2, "speakers": 2, "texts": 2, "durations": 2}
    assert read_table(data / "segments") == {STEREO_24BIT: f"{STEREO_24BIT} 0 -1",
                                             "vctk-p225-003": "vctk-p225-003 1.25 3.25"}
    entries = read_table(data / "wav.scp")
    segments = read_table(data / "segments")
    for cut in CutSet.from_shar(in_dir=shar):
        reco, start, end = segments[cut.id].split()
        utt = Utterance(cut.id, entries[reco], float(start), None if end == "-1" else float(end))
        got, rate = read_samples(utt)
        assert rate == cut.sampling_rate
        np.testing.assert_array_equal(got.T, cut.load_audio(), err_msg=cut.id)


def test_shar_cuts_and_members_that_do_not_line_up_are_refused(tmp_path):
    shar = pack_shar(tmp_path / "shar", shard_size=3)
    cuts_path = shar / "cuts.000000.jsonl.gz"
    with gzip.open(cuts_path, "rt") as f:
        cuts = [json.loads(line) for line in f]
    tar = shar / "recording.000000.tar"
    data = str(tmp_path / "data")

    def import_with(lines):
        with gzip.open(cuts_path, "wt") as f:
            f.writelines(json.dumps(cut) + "\n" for cut in lines)
        import_corpus("shar", [str(shar)], data)

    extra = dict(cuts[2], id="no-such-cut")
    with pytest.raises(DataDirError, match=f"Lhotse Shar shard {tar}, cut no-such-cut "
                                           rf"\({cuts_path}, line 4\): no member for it"):
        import_with(cuts + [extra])
    with pytest.raises(DataDirError, match=f"Lhotse Shar shard {tar}: member {SHAR_UTTS[2]}.flac "
                                           f"has no cut in {cuts_path}"):
        import_with(cuts[:2])
    with pytest.raises(DataDirError, match=f"cut {SHAR_UTTS[1]} .*line 1\\): its members would "
                                           f"be {SHAR_UTTS[0]}.flac and {SHAR_UTTS[0]}.json"):
        import_with([cuts[1], cuts[0], cuts[2]])
    bare = {key: value for key, value in cuts[1].items() if key != "recording"}
    with pytest.raises(DataDirError, match=f"cut {SHAR_UTTS[1]} .*line 2\\): the cut has no "
                                           "recording field"):
        import_with([cuts[0], bare, cuts[2]])
    on_disk = dict(cuts[0], recording=dict(cuts[0]["recording"], sources=[
        {"type": "file", "channels": [0], "source": "/data/a.wav"}]))
    with pytest.raises(DataDirError, match="its recording's source is 'file', not the "
                                           "placeholder Shar writes"):
        import_with([on_disk] + cuts[1:])
    import_with(cuts)
    tar.unlink()
    with pytest.raises(DataDirError, match=f"{cuts_path}: no recording shard beside it"):
        import_corpus("shar", [str(cuts_path)], data)
    with pytest.raises(DataDirError, match="no Lhotse Shar cuts file"):
        import_corpus("shar", [str(tmp_path / "data")], data)


def test_a_repeated_nemo_file_is_read_at_its_offsets(tmp_path):
    """A file NeMo tarred once and two lines read at two offsets (the second named -sub1):
    segments of the member, with NeMo's ids, decoding to those spans of the file."""
    wav = dict(read_pairs(SAMPLES / "wav.scp"))
    source = SAMPLES / wav[STEREO_24BIT]
    dest = tmp_path / "nemo"
    dest.mkdir()
    with tarfile.open(dest / "audio_0.tar", "w") as tar:
        add_member(tar, "jfk.flac", source.read_bytes())
    write_json_lines(dest / "tarred_audio_manifest.json", [
        {"audio_filepath": "jfk.flac", "offset": 0.0, "duration": 5.5, "text": "first",
         "shard_id": 0},
        {"audio_filepath": "jfk-sub1.flac", "offset": 5.5, "duration": 5.5, "text": "second",
         "shard_id": 0}])
    data = tmp_path / "data"
    import_corpus("nemo", [str(dest)], str(data))
    assert read_table(data / "segments") == {"jfk-000000-000550": "jfk-audio_0 0 5.5",
                                             "jfk-000550-000550": "jfk-audio_0 5.5 11"}
    assert read_table(data / "text") == {"jfk-000000-000550": "first",
                                         "jfk-000550-000550": "second"}
    entry = read_table(data / "wav.scp")["jfk-audio_0"]
    for start, end in ((0.0, 5.5), (5.5, 11.0)):
        got, _ = read_samples(Utterance("part", entry, start, end))
        want, _ = read_samples(Utterance("part", str(source), start, end))
        np.testing.assert_array_equal(got, want)


def test_nemo_lines_without_their_member_are_named(tmp_path):
    nemo = pack_nemo(tmp_path / "nemo")
    manifest = nemo / "tarred_audio_manifest.json"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    data = str(tmp_path / "data")
    cases = [(dict(lines[1], audio_filepath="missing.wav"),
              rf"{manifest}, line 2: 'missing.wav' is not a member of {nemo / 'audio_0.tar'}"),
             (dict(lines[1], audio_filepath="missing-sub2.wav"),
              r"line 2: 'missing.wav' \(the file 'missing-sub2.wav' repeats\) is not a member"),
             (dict(lines[1], shard_id=7),
              rf"{manifest}, line 2: no shard 7 \({nemo / 'audio_7.tar'} is not there\)"),
             ({key: value for key, value in lines[1].items() if key != "shard_id"},
              rf"{manifest}, line 2: no shard_id")]
    for bad, message in cases:
        write_json_lines(manifest, [lines[0], bad] + lines[2:])
        with pytest.raises(DataDirError, match=message):
            import_corpus("nemo", [str(nemo)], data)
    sharded = nemo / "sharded_manifests" / "manifest_1.json"
    write_json_lines(sharded, [dict(json.loads(sharded.read_text().splitlines()[0]),
                                    shard_id=0)])
    with pytest.raises(DataDirError, match=rf"{sharded}, line 1: shard_id 0 in the manifest of "
                                           "shard 1"):
        import_corpus("nemo", [str(sharded)], data)


def test_a_saved_dataset_missing_a_file_or_a_row_is_named(tmp_path):
    saved = pack_saved_dataset(tmp_path / "saved")
    data = tmp_path / "data"
    import_corpus("hf", [str(saved)], str(data))
    wav = read_table(data / "wav.scp")
    assert wav[UTTS[4]] == f"arrow:{saved / 'data-00001-of-00002.arrow'}:1"
    with pytest.raises(ValueError, match=f"arrow file {saved / 'data-00001-of-00002.arrow'} has 3 "
                                         "rows, not a row 3"):
        read_samples(Utterance("x", f"arrow:{saved / 'data-00001-of-00002.arrow'}:3"))
    (saved / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataDirError, match=f"{saved / 'state.json'} lists "
                                           "data-00001-of-00002.arrow, which is not there"):
        import_corpus("hf", [str(saved)], str(tmp_path / "data2"))
    (saved / "dataset_dict.json").write_text("{}")
    (saved / "state.json").rename(saved / "moved.json")
    with pytest.raises(DataDirError, match="is a DatasetDict saved by save_to_disk: name one "
                                           "split's folder"):
        import_corpus("hf", [str(saved)], str(tmp_path / "data2"))


def test_malformed_arrow_entries_say_the_form():
    with pytest.raises(ValueError, match="is not arrow:<file.arrow>:<row>"):
        containers.parse("arrow:/data/a.arrow:1:2")
    entry = containers.parse("arrow:/d/data-00000-of-00001.arrow:7")
    assert (entry.kind, entry.row, containers.place(entry)) == ("arrow", 7, (7,))
    assert "arrow:" in containers.PREFIXES


def test_the_command_line_imports_each_format(corpora, tmp_path):
    shar = pack_shar(tmp_path / "shar", utts=["vctk-p225-003"])
    proc = subprocess.run([sys.executable, str(REPO / "pyscripts" / "import_corpus.py"),
                           "--format", "shar", str(shar), str(tmp_path / "data")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("1 utterances, 1 speakers, 1 transcripts, 1 durations")
