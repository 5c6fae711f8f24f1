"""Stage outputs exported as shards aligned with the input shards (speechdump.shard_export,
pyscripts/export_shards.py): real speech packed as WebDataset tars whose members are not in id
order, imported in place, fbank and Resemblyzer stages run on it, and tokens derived from the
fbank; Lhotse Shar and parquet shards hold each input shard's utterances in its order, every
array bit for bit as kaldiio reads it from the arks, and each field's config fingerprint."""

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile

import kaldiio
import numpy as np
import pytest

lhotse = pytest.importorskip("lhotse")
pq = pytest.importorskip("pyarrow.parquet")

from conftest import REPO, run_feats_stage, run_stage  # noqa: E402
from speechdump.corpora import import_corpus  # noqa: E402
from speechdump.data import read_table  # noqa: E402
from speechdump.extractors.base import INT, TOKENS, Stream  # noqa: E402
from speechdump.job import write_merged_record  # noqa: E402
from speechdump.kaldi_io import ArkScpWriter  # noqa: E402
from speechdump.shard_export import (  # noqa: E402
    PARQUET_RECORD,
    SHAR_RECORD,
    ShardExportError,
    data_dir_utterances,
    export_parquet,
    export_shar,
    output_shards,
    shar_fields,
    shard_indices,
)
from test_containers import FBANK, add_member, samples  # noqa: E402

EXPORT = [sys.executable, str(REPO / "pyscripts" / "export_shards.py")]
# Members in an order that is not the ids' order, in shards whose names carry their index.
SHARDS = {3: ["vctk-p238-165", "arctic-aew-a0001", "ljspeech-lj-002-0020"],
          7: ["jfk-inaugural1961", "vctk-p225-003", "arctic-aew-a0002"]}
STREAMS = ["feats", "resemblyzer", "units"]


def pack(dest, suffix=".tar"):
    """The samples as WebDataset tars ``recording.00000N.tar`` holding SHARDS' utterances."""
    dest.mkdir(parents=True, exist_ok=True)
    items = {utt: (audio, speaker, text) for utt, audio, speaker, text in samples()}
    for index, utts in SHARDS.items():
        with tarfile.open(dest / f"recording.{index:06d}{suffix}",
                          "w:gz" if suffix.endswith(".gz") else "w") as tar:
            for utt in utts:
                audio, speaker, text = items[utt]
                add_member(tar, f"{utt}{audio.suffix}", audio.read_bytes())
                add_member(tar, f"{utt}.json",
                           json.dumps({"speaker": speaker, "text": text}).encode())


def member_order(shard):
    """The utterances of a tar shard in the order its audio members lie in it."""
    with tarfile.open(shard) as tar:
        return [m.name.rsplit(".", 1)[0] for m in tar if not m.name.endswith(".json")]


def write_units(fbank_dir, out):
    """A token stream of the real fbank (the loudest band of every other frame, int32 at 20
    ms), written as a stage writes it: ark/scp and meta.json."""
    out.mkdir(parents=True)
    with ArkScpWriter(str(out / "units.ark"), str(out / "units.scp")) as writer:
        for utt, fbank in kaldiio.load_scp_sequential(str(fbank_dir / "feats.scp")):
            writer.write(utt, fbank[::2].argmax(axis=1).astype(np.int32))
    stream = Stream(kind=INT, shape=TOKENS, frame_shift=0.02)
    write_merged_record(str(out), {"tag": "units", "config": {"toolkit": "argmax", "of": "feats"},
                                   "streams": [dict(dataclasses.asdict(stream), stem="units")]})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, stage_env):
    """(data dir, {stream: stage dir}, {index: input shard}) of the packed and imported samples."""
    base = tmp_path_factory.mktemp("shard_export")
    pack(base / "tars")
    data = base / "data"
    import_corpus("webdataset", [str(base / "tars")], str(data))
    run_feats_stage([*FBANK, data, base / "fbank"], stage_env)
    run_stage(["--nj", 2, data, base / "spk"], stage_env)
    write_units(base / "fbank", base / "units")
    stages = {"feats": base / "fbank", "resemblyzer": base / "spk", "units": base / "units"}
    inputs = {index: str(base / "tars" / f"recording.{index:06d}.tar") for index in SHARDS}
    return data, stages, inputs


def stage_arrays(stages):
    """{stream: {utt: array}} as kaldiio reads the stages' scps."""
    return {name: dict(kaldiio.load_scp_sequential(str(stages[name] / f"{name}.scp")))
            for name in STREAMS}


def fingerprint(stage_dir):
    """SHA-256 of the stage's meta.json config (key order aside), computed here on its own."""
    config = json.loads((stage_dir / "meta.json").read_text())["config"]
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def stage_dirs(stages):
    return [str(stages[name]) for name in STREAMS]


def test_shard_names_give_their_index():
    assert shard_indices(["/c/recording.000003.tar"]) == [3]
    assert shard_indices(["/c/train-00000-of-00002.parquet",
                          "/c/train-00001-of-00002.parquet"]) == [0, 1]
    assert shard_indices(["/c/shard-9.tar.bz2", "/c/shard-10.tar.bz2"]) == [9, 10]
    assert shard_indices(["/c/a.tar", "/c/b.tar"]) is None  # no digits
    assert shard_indices(["/c/a1.tar", "/c/a01.tar"]) is None  # one number twice
    assert shard_indices(["/c/train-00000-of-00001.parquet"]) is None  # which run is it?
    assert shard_indices(["/c/x1-2.tar", "/c/x3-4.tar"]) is None  # two runs differ


def test_compressed_tars_and_parquet_row_groups_are_followed_in_reading_order(tmp_path):
    import pyarrow as pa

    pack(tmp_path / "tgz", suffix=".tar.gz")
    items = {utt: audio for utt, audio, _, _ in samples()}
    (tmp_path / "hf").mkdir()
    for index, utts in SHARDS.items():  # two rows per row group
        pq.write_table(pa.table({"id": utts, "audio": [
            {"bytes": items[u].read_bytes(), "path": items[u].name} for u in utts]}),
            tmp_path / "hf" / f"train-{index:05d}-of-00009.parquet", row_group_size=2)
    for kind, source, name in (("webdataset", "tgz", "recording.{:06d}.tar.gz"),
                               ("hf", "hf", "train-{:05d}-of-00009.parquet")):
        data = tmp_path / f"data_{source}"
        import_corpus(kind, [str(tmp_path / source)], str(data))
        shards = output_shards(str(data), data_dir_utterances(str(data)), 1000)
        assert [(s.index, s.input, s.utterances) for s in shards] == [
            (index, str(tmp_path / source / name.format(index)), utts)
            for index, utts in SHARDS.items()]


def test_shar_shards_follow_the_input_shards_bit_for_bit(corpus, tmp_path):
    data, stages, inputs = corpus
    out = tmp_path / "shar"
    record = export_shar(str(data), str(out), stage_dirs(stages))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SHAR_RECORD] + [f"{name}.{index:06d}.{ext}" for index in SHARDS
                         for name, ext in [("cuts", "jsonl.gz")] + [(s, "tar") for s in STREAMS]])
    assert [(s["index"], s["input"]) for s in record["shards"]] == sorted(inputs.items())
    on_disk = json.loads((out / SHAR_RECORD).read_text())
    for name in STREAMS:
        assert on_disk["fields"][name]["fingerprint"] == fingerprint(stages[name])
    arrays = stage_arrays(stages)
    text, utt2spk = read_table(data / "text"), read_table(data / "utt2spk")
    for index, shard in inputs.items():
        fields = {name: [str(out / f"{name}.{index:06d}.{'jsonl.gz' if name == 'cuts' else 'tar'}")]
                  for name in ["cuts", *STREAMS]}
        cuts = list(lhotse.CutSet.from_shar(fields=fields))
        assert [cut.id for cut in cuts] == member_order(shard) == SHARDS[index]
        for cut in cuts:
            assert (cut.supervisions[0].text, cut.supervisions[0].speaker) == \
                   (text[cut.id], utt2spk[cut.id])
            for name in STREAMS:
                loaded, stored = cut.load_custom(name), arrays[name][cut.id]
                assert loaded.dtype == stored.dtype and loaded.shape == stored.shape, name
                assert np.array_equal(loaded, stored), (cut.id, name)
    assert arrays["units"][SHARDS[3][0]].dtype == np.int32
    # The record does not get in the way of loading the directory whole.
    assert [c.id for c in lhotse.CutSet.from_shar(in_dir=str(out))] == SHARDS[3] + SHARDS[7]
    assert shar_fields(str(out))["feats"] == [str(out / f"feats.{i:06d}.tar") for i in SHARDS]


def test_the_features_stream_becomes_the_cuts_features(corpus, tmp_path):
    data, stages, _ = corpus
    out = tmp_path / "shar"
    record = export_shar(str(data), str(out), [str(stages["feats"])], features="feats")
    assert list(record["fields"]) == ["features"]
    assert record["fields"]["features"]["stem"] == "feats"
    fbank = stage_arrays(stages)["feats"]
    cuts = list(lhotse.CutSet.from_shar(fields=shar_fields(str(out))))
    assert [c.id for c in cuts] == SHARDS[3] + SHARDS[7]
    for cut in cuts:
        assert cut.num_frames == fbank[cut.id].shape[0]
        assert np.array_equal(cut.load_features(), fbank[cut.id]), cut.id


def test_parquet_files_follow_the_input_shards_bit_for_bit(corpus, tmp_path):
    data, stages, inputs = corpus
    out = tmp_path / "parquet"
    export_parquet(str(data), str(out), stage_dirs(stages))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [PARQUET_RECORD] + [f"shard.{index:06d}.parquet" for index in SHARDS])
    arrays = stage_arrays(stages)
    for index, shard in inputs.items():
        table = pq.read_table(out / f"shard.{index:06d}.parquet")
        assert table.column_names == ["id", *STREAMS]
        assert str(table.schema.field("feats").type.value_type.value_type) == "float"
        assert str(table.schema.field("resemblyzer").type.value_type) == "float"
        assert str(table.schema.field("units").type.value_type) == "int32"
        ids = table.column("id").to_pylist()
        assert ids == member_order(shard) == SHARDS[index]
        dtypes = {"feats": np.float32, "resemblyzer": np.float32, "units": np.int32}
        for name in STREAMS:
            for utt, value in zip(ids, table.column(name).to_pylist()):
                loaded = np.asarray(value, dtypes[name])
                assert loaded.shape == arrays[name][utt].shape, (utt, name)
                assert np.array_equal(loaded, arrays[name][utt]), (utt, name)
        meta = json.loads(table.schema.metadata[b"speechdump"])
        assert (meta["index"], meta["input"]) == (index, shard)
        for name in STREAMS:
            assert meta["fields"][name]["fingerprint"] == fingerprint(stages[name])
    record = json.loads((out / PARQUET_RECORD).read_text())
    assert {s["index"]: s["input"] for s in record["shards"]} == inputs


def test_unnumbered_shards_are_numbered_in_path_order(corpus, tmp_path):
    data, stages, inputs = corpus
    # The same tars under names without a number: 7 first by path, then 3.
    renamed = {7: tmp_path / "alpha.tar", 3: tmp_path / "beta.tar"}
    for index, path in renamed.items():
        shutil.copy(inputs[index], path)
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    wav = (moved / "wav.scp").read_text()
    for index, path in renamed.items():
        wav = wav.replace(inputs[index], str(path))
    (moved / "wav.scp").write_text(wav)
    record = export_shar(str(moved), str(tmp_path / "shar"), stage_dirs(stages))
    assert [(s["index"], s["input"]) for s in record["shards"]] == \
           [(0, str(renamed[7])), (1, str(renamed[3]))]
    loaded = lhotse.CutSet.from_shar(fields=shar_fields(str(tmp_path / "shar")))
    assert [c.id for c in loaded] == SHARDS[7] + SHARDS[3]


def test_plain_files_are_cut_every_shard_size_in_id_order(corpus, tmp_path):
    data, stages, inputs = corpus
    # The members unpacked to plain files: the same audio, so the same stage outputs.
    plain = tmp_path / "data"
    shutil.copytree(data, plain)
    lines = []
    for utt in read_table(data / "wav.scp"):
        shard = next(inputs[i] for i, utts in SHARDS.items() if utt in utts)
        with tarfile.open(shard) as tar:
            member = next(m for m in tar if m.name.rsplit(".", 1)[0] == utt
                          and not m.name.endswith(".json"))
            tar.extract(member, tmp_path / "audio")
        lines.append(f"{utt} {tmp_path / 'audio' / member.name}\n")
    (plain / "wav.scp").write_text("".join(lines))
    out = tmp_path / "parquet"
    record = export_parquet(str(plain), str(out), stage_dirs(stages), shard_size=4)
    ids = sorted(read_table(data / "text"))
    assert [(s["index"], s["input"], s["utterances"]) for s in record["shards"]] == \
           [(0, None, 4), (1, None, 2)]
    assert pq.read_table(out / "shard.000000.parquet").column("id").to_pylist() == ids[:4]
    assert pq.read_table(out / "shard.000001.parquet").column("id").to_pylist() == ids[4:]


def test_an_export_of_another_config_is_refused_unless_forced(corpus, tmp_path):
    data, stages, _ = corpus
    other = tmp_path / "fbank40"
    shutil.copytree(stages["feats"], other)
    meta = json.loads((other / "meta.json").read_text())
    meta["config"]["options"]["num_mel_bins"] = 40
    (other / "meta.json").write_text(json.dumps(meta))
    for export, record_name in ((export_shar, SHAR_RECORD), (export_parquet, PARQUET_RECORD)):
        out = tmp_path / record_name
        export(str(data), str(out), [str(stages["feats"])])
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        with pytest.raises(ShardExportError, match=f"{out / record_name}: field 'feats' there was "
                                                   f"exported from {stages['feats']} .*{other} "
                                                   "has another config"):
            export(str(data), str(out), [str(other)])
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
        export(str(data), str(out), [str(stages["feats"])])  # the same config: rewritten
        record = export(str(data), str(out), [str(other)], force=True)
        assert record["fields"]["feats"]["fingerprint"] == fingerprint(other)
        assert json.loads((out / record_name).read_text())["fields"]["feats"]["stage"] == \
               str(other)


def test_files_no_export_record_lists_are_not_overwritten(corpus, tmp_path):
    data, stages, _ = corpus
    out = tmp_path / "shar"
    out.mkdir()
    (out / "cuts.000003.jsonl.gz").write_bytes(b"someone else's cuts")
    with pytest.raises(ShardExportError, match=f"{out / 'cuts.000003.jsonl.gz'} exists and no "
                                               "export record"):
        export_shar(str(data), str(out), [str(stages["feats"])])
    assert (out / "cuts.000003.jsonl.gz").read_bytes() == b"someone else's cuts"
    assert sorted(p.name for p in out.iterdir()) == ["cuts.000003.jsonl.gz"]


def test_an_utterance_missing_from_an_output_is_named(corpus, tmp_path):
    data, stages, _ = corpus
    cut = tmp_path / "fbank"
    shutil.copytree(stages["feats"], cut)
    lines = (cut / "feats.scp").read_text().splitlines(keepends=True)
    dropped = lines[2].split()[0]
    (cut / "feats.scp").write_text("".join(lines[:2] + lines[3:]))
    for export in (export_shar, export_parquet):
        with pytest.raises(ShardExportError, match=f"utterance '{dropped}' of {data / 'text'} is "
                                                   f"not in {cut / 'feats.scp'}"):
            export(str(data), str(tmp_path / export.__name__), [str(cut)])
        assert not (tmp_path / export.__name__).exists()


def test_the_command_line(corpus, tmp_path):
    data, stages, _ = corpus
    out = tmp_path / "parquet"
    proc = subprocess.run([*EXPORT, "--format", "parquet", str(data), str(out),
                           str(stages["feats"]), str(stages["resemblyzer"])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out / PARQUET_RECORD}: 6 utterances, aligned with 2 input "
                                  "shards, fields feats, resemblyzer")
    proc = subprocess.run([*EXPORT, "--format", "shar", "--features", "resemblyzer", str(data),
                           str(tmp_path / "shar"), str(stages["resemblyzer"])],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("ERROR: --features resemblyzer: not a frame-level float stream")


def test_parquet_row_groups_split_a_shard_without_changing_it(corpus, tmp_path, monkeypatch):
    from speechdump import shard_export

    data, stages, _ = corpus
    export_parquet(str(data), str(tmp_path / "whole"), stage_dirs(stages))
    monkeypatch.setattr(shard_export, "ROW_GROUP_BYTES", 1)  # one utterance per row group
    export_parquet(str(data), str(tmp_path / "split"), stage_dirs(stages))
    for index in SHARDS:
        name = f"shard.{index:06d}.parquet"
        assert pq.ParquetFile(tmp_path / "whole" / name).num_row_groups == 1
        assert pq.ParquetFile(tmp_path / "split" / name).num_row_groups == len(SHARDS[index])
        assert pq.read_table(tmp_path / "split" / name).equals(
            pq.read_table(tmp_path / "whole" / name))


def test_over_lhotse_shar_input_the_recordings_load_beside_the_exported_fields(tmp_path,
                                                                                stage_env):
    from test_corpus_formats import SHAR_UTTS, pack_shar

    shar_in = pack_shar(tmp_path / "input")
    data = tmp_path / "data"
    import_corpus("shar", [str(shar_in)], str(data))
    run_feats_stage([*FBANK, data, tmp_path / "fbank"], stage_env)
    out = tmp_path / "export"
    record = export_shar(str(data), str(out), [str(tmp_path / "fbank")])
    recordings = sorted(str(p) for p in shar_in.glob("recording.*.tar"))
    assert [s["input"] for s in record["shards"]] == recordings
    assert [s["index"] for s in record["shards"]] == [0, 1]
    fbank = dict(kaldiio.load_scp_sequential(str(tmp_path / "fbank" / "feats.scp")))
    fields = {**shar_fields(str(out)), "recording": recordings}
    cuts = list(lhotse.CutSet.from_shar(fields=fields))
    assert [c.id for c in cuts] == SHAR_UTTS
    original = {c.id: c for c in lhotse.CutSet.from_shar(in_dir=str(shar_in))}
    for cut in cuts:
        # The cut spans utt2dur's duration, to the millisecond: the recording's samples, up to
        # half a millisecond short or long (Lhotse pads the end within its tolerance).
        audio, whole = cut.load_audio(), original[cut.id].load_audio()
        common = min(audio.shape[1], whole.shape[1])
        assert abs(whole.shape[1] - audio.shape[1]) <= cut.sampling_rate // 2000 + 1, cut.id
        assert np.array_equal(audio[:, :common], whole[:, :common]), cut.id
        assert np.array_equal(cut.load_custom("feats"), fbank[cut.id]), cut.id
