"""Indexed shards (speechdump.shards, pyscripts/write_shards.py) and their readers, on tokens
and fbank features of the real speech samples."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio
from torch.utils.data import DataLoader

from conftest import REPO, read_pairs, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.data import Utterance
from speechdump.errors import ShardError
from speechdump.extractors.base import FLOAT, FRAMES, INT, TOKENS, Stream
from speechdump.job import write_merged_record
from speechdump.kaldi_io import write_ark_scp
from speechdump.readers import (LengthBucketSampler, ScpDataset, ShardDataset, ShardReader,
                                collate_padded, speechbrain_item)

WRITE = [sys.executable, str(REPO / "pyscripts" / "write_shards.py")]


def stage_dir(base, stem, arrays, stream, config):
    """``arrays`` as a stage's output: <base>/<stem>.{ark,scp} and meta.json."""
    base.mkdir(parents=True, exist_ok=True)
    write_ark_scp(str(base / f"{stem}.ark"), str(base / f"{stem}.scp"), arrays)
    record = dict(dataclasses.asdict(stream), stem=stem)
    write_merged_record(str(base), {"tag": stem, "config": config, "streams": [record]})
    return base / f"{stem}.scp"


@pytest.fixture(scope="module")
def real(tmp_path_factory, sample_utterances):
    """40-dim fbank of the samples, in text order, and tokens made of them (the loudest mel
    band of each frame, so real speech decides them): two stage outputs."""
    base = tmp_path_factory.mktemp("shards")
    order = [key for key, _ in read_pairs(REPO / "samples" / "real_speech" / "text")]
    paths = dict(sample_utterances)
    resamplers = ResamplerCache()
    feats, tokens = {}, {}
    for utt in order:
        wave = load_audio(Utterance(utt, paths[utt]), 16000, resamplers)
        fbank = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=40, dither=0.0,
            sample_frequency=16000).numpy()
        feats[utt] = fbank
        tokens[utt] = fbank.argmax(axis=1).astype(np.int32)
    feats_scp = stage_dir(base / "fbank", "feats", feats,
                          Stream(kind=FLOAT, shape=FRAMES, frame_shift=0.01, dim=40),
                          {"num_mel_bins": 40})
    tokens_scp = stage_dir(base / "tok", "tokens", tokens,
                           Stream(kind=INT, shape=TOKENS, frame_shift=0.01),
                           {"n_clusters": 40, "centers_sha1": "x"})
    return base, order, feats, tokens, feats_scp, tokens_scp


def write(args, check=True):
    proc = subprocess.run(WRITE + [str(a) for a in args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_tokens_read_back_in_text_order_across_shards(real):
    base, order, _, tokens, _, scp = real
    write(["--shard_size", 7, scp, base / "out" / "tok"])
    header = json.loads((base / "out" / "tok.json").read_text())
    assert header["kind"] == "tokens" and header["dtype"] == "int16"
    assert header["vocab_size"] == 40 and header["codebooks"] == 1
    assert header["frame_shift"] == 0.01 and header["frame_rate"] == 100.0
    assert len(header["fingerprint"]) == 64
    assert [s["count"] for s in header["shards"]] == [7, 7, 1]  # 15 utterances
    reader = ShardReader(str(base / "out" / "tok.json"))
    assert reader.ids == order
    assert reader.lengths.tolist() == [len(tokens[u]) for u in order]
    for i, utt in enumerate(order):
        np.testing.assert_array_equal(reader[i], tokens[utt])
        np.testing.assert_array_equal(reader.get(utt), tokens[utt])
        assert reader[i].dtype == np.int16
    np.testing.assert_array_equal(reader[-1], tokens[order[-1]])
    with pytest.raises(KeyError, match="'nope' is not in the shards"):
        reader.get("nope")


def test_wide_vocabulary_is_int32_and_features_float16(real):
    base, order, feats, tokens, feats_scp, scp = real
    write(["--vocab_size", 70000, "--shard_size", 10, scp, base / "wide" / "tok"])
    wide = ShardReader(str(base / "wide" / "tok.json"))
    assert wide.header["dtype"] == "int32"
    np.testing.assert_array_equal(wide.get(order[3]), tokens[order[3]])
    for dtype in ("float32", "float16"):
        write(["--float_dtype", dtype, "--shard_size", 5, feats_scp, base / dtype / "feats"])
        reader = ShardReader(str(base / dtype / "feats.json"))
        assert reader.header["kind"] == "frames" and reader.header["row_shape"] == [40]
        for utt in order:
            np.testing.assert_array_equal(reader.get(utt), feats[utt].astype(dtype))


def test_two_dataloader_workers_read_every_utterance(real):
    base, order, _, tokens, _, scp = real
    write(["--shard_size", 4, scp, base / "dl" / "tok"])
    reader = ShardReader(str(base / "dl" / "tok.json"))
    reader[0]  # mapped in this process before the fork: the workers map their own
    loader = DataLoader(ShardDataset(reader), batch_size=3, num_workers=2,
                        collate_fn=collate_padded)
    seen = {}
    for batch in loader:
        for utt, row, length in zip(batch["id"], batch["tokens"], batch["tokens_lengths"]):
            seen[utt] = row[:length].numpy()
    assert list(seen) == order
    for utt in order:
        np.testing.assert_array_equal(seen[utt], tokens[utt])


def test_scp_dataset_and_speechbrain_item_take_shards(real):
    base, order, feats, tokens, feats_scp, scp = real
    write(["--shard_size", 9, scp, base / "ds" / "tok"])
    head = str(base / "ds" / "tok.json")
    dataset = ScpDataset({"tokens": head, "feats": str(feats_scp)})
    assert dataset.keys == order
    item = dataset[5]
    np.testing.assert_array_equal(item["tokens"], tokens[order[5]])
    np.testing.assert_array_equal(item["feats"], feats[order[5]])
    assert item["tokens"].flags.writeable
    tensor = speechbrain_item(head, provides="tokens")(order[2])
    assert torch.equal(tensor, torch.from_numpy(tokens[order[2]].astype(np.int16)))


def test_length_bucket_sampler_covers_every_index_once(real):
    base, order, _, tokens, _, scp = real
    write(["--shard_size", 8, scp, base / "bs" / "tok"])
    reader = ShardReader(str(base / "bs" / "tok.json"))
    sampler = LengthBucketSampler(reader.lengths, max_frames=3000, num_buckets=3, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(order)))
    for b in batches:
        assert len(b) == 1 or max(reader.lengths[b]) * len(b) <= 3000
    assert list(sampler) == batches  # the same epoch, the same batches
    sampler.set_epoch(1)
    assert sorted(i for b in sampler for i in b) == list(range(len(order)))
    assert list(sampler) != batches


def test_disagreeing_files_are_refused_naming_the_file(real):
    base, order, _, _, _, scp = real
    out = base / "bad"
    write(["--shard_size", 4, scp, out / "tok"])
    head = out / "tok.json"
    ShardReader(str(head))
    # The .bin cut short: the header's size and the index's last offsets run past its end.
    bin_path = out / "tok.00001.bin"
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[:-2])
    with pytest.raises(ShardError, match="tok.00001.bin: .* bytes, the header"):
        ShardReader(str(head))
    header = json.loads(head.read_text())
    header["shards"][1]["elements"] -= 1
    head.write_text(json.dumps(header))
    with pytest.raises(ShardError, match=r"tok.00001.idx: utterance '.*' .* runs past the end"):
        ShardReader(str(head))
    bin_path.write_bytes(data)
    header["shards"][1]["elements"] += 1
    # A wrong header: another type than the .bin holds, or not a shard header at all.
    header["dtype"] = "int32"
    head.write_text(json.dumps(header))
    with pytest.raises(ShardError, match="tok.00000.bin: .* bytes, the header"):
        ShardReader(str(head))
    header["dtype"] = "int16"
    header["shards"][2]["count"] = 99
    header["num_utterances"] += 99 - 4
    head.write_text(json.dumps(header))
    with pytest.raises(ShardError, match="tok.00002.idx: 4 utterances, the header"):
        ShardReader(str(head))
    head.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ShardError, match="tok.json: not a speechdump-shards header"):
        ShardReader(str(head))
    (out / "tok.00000.idx").write_bytes(b"garbage")
    head.write_text(json.dumps(dict(header, shards=header["shards"][:1], num_utterances=4)))
    with pytest.raises(ShardError, match="tok.00000.idx: not a shard index"):
        ShardReader(str(head))
    # The command line says it too, in one line.
    proc = write(["--kind", "tokens", "--vocab_size", 3, scp, out / "small"], check=False)
    assert proc.returncode != 0 and "ERROR:" in proc.stderr and "outside [0, 3)" in proc.stderr
    assert not os.path.exists(out / "small.json")


def test_dump_tokens_writes_shards(tmp_path, real, stage_env):
    base, order, feats, _, feats_scp, _ = real
    km = tmp_path / "km"
    run_stage(["--n_clusters", 16, "--portion", 0.5, "--seed", 1, feats_scp, km], stage_env,
              script="learn_kmeans.sh")
    out = tmp_path / "tokens"
    run_stage(["--nj", 2, "--shards", "true", "--shard_size", 4, feats_scp, km, out], stage_env,
              script="dump_tokens.sh")
    reader = ShardReader(str(out / "shards" / "tokens.json"))
    assert reader.ids == order and reader.header["vocab_size"] == 16
    assert len(reader.header["shards"]) == 4 and reader.header["frame_shift"] == 0.01
    meta = json.loads((out / "meta.json").read_text())
    from speechdump.shards import config_fingerprint
    assert reader.header["fingerprint"] == config_fingerprint(meta["config"])
    import kaldiio
    for utt, location in read_pairs(out / "tokens.scp"):
        np.testing.assert_array_equal(reader.get(utt), kaldiio.load_mat(location))
    proc = run_stage(["--shards", "maybe", feats_scp, km, tmp_path / "x"], stage_env,
                     script="dump_tokens.sh", check=False)
    assert proc.returncode != 0 and "--shards expects true or false" in proc.stderr
