"""Training-time readers: ScpDataset (+ DataLoader workers), collate_padded, SpeechBrain items."""

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from speechdump import engine
from speechdump.data import Utterance
from speechdump.extractors import load_extractor
from speechdump.kaldi_io import write_ark_scp
from speechdump.readers import ScpDataset, ScpReadError, collate_padded, speechbrain_item


@pytest.fixture(scope="module")
def stored(sample_utterances, tmp_path_factory):
    """Real fbank of 4 sample utterances, 256-dim vectors and int32 token sequences in arks."""
    root = tmp_path_factory.mktemp("dump")
    chosen = sample_utterances[:4]
    feats = {}
    engine.run([Utterance(u, p) for u, p in chosen], load_extractor("fbank"), feats.__setitem__,
               engine.EngineOptions(progress=False))
    rng = np.random.default_rng(0)
    arrays = {
        "feats": feats,
        "spk": {u: rng.standard_normal(256).astype(np.float32) for u, _ in chosen},
        "tokens": {u: rng.integers(0, 5000, size=5 + 3 * i).astype(np.int32)
                   for i, (u, _) in enumerate(chosen)},
    }
    scps = {}
    for name, table in arrays.items():
        scps[name] = str(root / f"{name}.scp")
        write_ark_scp(str(root / f"{name}.ark"), scps[name], table)
    return arrays, scps, [u for u, _ in chosen]


def assert_item(item, arrays):
    utt = item["id"]
    for name in arrays:
        got = np.asarray(item[name])
        assert got.dtype == arrays[name][utt].dtype, (utt, name)
        np.testing.assert_array_equal(got, arrays[name][utt], err_msg=f"{utt} {name}")


def test_dataset_returns_the_stored_arrays_by_id(stored):
    arrays, scps, utts = stored
    dataset = ScpDataset(scps)
    assert len(dataset) == 4 and dataset.keys == utts
    for i, utt in enumerate(utts):
        item = dataset[i]
        assert sorted(item) == ["feats", "id", "spk", "tokens"] and item["id"] == utt
        assert item["feats"].shape[1] == 80 and item["spk"].shape == (256,)
        assert_item(item, arrays)
    # Chosen keys, in the order given.
    assert [d["id"] for d in ScpDataset(scps, keys=utts[::-1])] == utts[::-1]


def test_dataloader_workers_read_every_item(stored):
    arrays, scps, utts = stored
    dataset = ScpDataset(scps)
    dataset[0]  # a read in the parent before the fork leaves nothing open behind
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda b: b[0])
    seen = []
    for item in loader:
        assert_item(item, arrays)
        seen.append(item["id"])
    assert sorted(seen) == sorted(utts)


def test_collate_pads_and_gives_lengths(stored):
    arrays, scps, utts = stored
    loader = DataLoader(ScpDataset(scps), batch_size=3, num_workers=2, collate_fn=collate_padded)
    batches = list(loader)
    assert [len(b["id"]) for b in batches] == [3, 1]
    for batch in batches:
        frames = [len(arrays["feats"][u]) for u in batch["id"]]
        assert batch["feats"].shape == (len(frames), max(frames), 80)
        assert batch["feats_lengths"].tolist() == frames
        assert batch["spk"].shape == (len(frames), 256)
        assert batch["tokens"].dtype == torch.int32
        for i, utt in enumerate(batch["id"]):
            n = frames[i]
            np.testing.assert_array_equal(batch["feats"][i, :n].numpy(), arrays["feats"][utt])
            assert (batch["feats"][i, n:] == 0).all()
            np.testing.assert_array_equal(batch["spk"][i].numpy(), arrays["spk"][utt])
            t = batch["tokens_lengths"][i]
            np.testing.assert_array_equal(batch["tokens"][i, :t].numpy(), arrays["tokens"][utt])
            assert (batch["tokens"][i, t:] == -1).all()


def test_construction_reads_no_ark(stored, tmp_path):
    arrays, _, utts = stored
    ark, scp = str(tmp_path / "gone.ark"), str(tmp_path / "gone.scp")
    write_ark_scp(ark, scp, {u: arrays["spk"][u] for u in utts})
    os.remove(ark)
    dataset = ScpDataset({"spk": scp})  # scp text only: fine without its ark
    assert len(dataset) == 4
    item = speechbrain_item(scp, provides="spk")  # likewise
    with pytest.raises(ScpReadError, match=f"'{utts[1]}' of {scp} from '{ark}:\\d+'.*"
                                           "FileNotFoundError"):
        dataset[1]
    with pytest.raises(ScpReadError, match=f"'{utts[0]}'"):
        item(utts[0])


def test_an_id_missing_from_another_scp_names_that_scp(stored, tmp_path):
    arrays, scps, utts = stored
    short = str(tmp_path / "short.scp")
    with open(scps["spk"], encoding="utf-8") as f:
        lines = f.readlines()
    with open(short, "w", encoding="utf-8") as f:
        f.writelines(lines[:2])  # the last two utterances missing
    with pytest.raises(KeyError, match=f"'{utts[2]}' \\(and 1 more\\) is not in the 'spk' scp "
                                       f"{short}"):
        ScpDataset({"feats": scps["feats"], "spk": short})
    # Keys limited to what both hold: fine.
    assert len(ScpDataset({"feats": scps["feats"], "spk": short}, keys=utts[:2])) == 2
    with pytest.raises(KeyError, match=f"'nobody' is not in the scp {scps['spk']}"):
        speechbrain_item(scps["spk"])("nobody")


def test_speechbrain_dynamic_items(stored):
    from speechbrain.dataio.batch import PaddedBatch
    from speechbrain.dataio.dataset import DynamicItemDataset

    arrays, scps, utts = stored
    data = {utt: {"spk_id": f"spk{i}"} for i, utt in enumerate(utts)}
    dataset = DynamicItemDataset(data)
    dataset.add_dynamic_item(speechbrain_item(scps["feats"], provides="feats"))
    dataset.add_dynamic_item(speechbrain_item(scps["spk"], provides="spk_embed"))
    dataset.set_output_keys(["id", "spk_id", "feats", "spk_embed"])
    for i, utt in enumerate(utts):
        item = dataset[i]
        assert item["id"] == utt and item["spk_id"] == f"spk{i}"
        assert isinstance(item["feats"], torch.Tensor)
        np.testing.assert_array_equal(item["feats"].numpy(), arrays["feats"][utt])
        np.testing.assert_array_equal(item["spk_embed"].numpy(), arrays["spk"][utt])
    # Through a DataLoader with workers and SpeechBrain's own padding.
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=PaddedBatch)
    for batch in loader:
        for i, utt in enumerate(batch.id):
            n = len(arrays["feats"][utt])
            np.testing.assert_array_equal(batch.feats.data[i, :n].numpy(), arrays["feats"][utt])
            np.testing.assert_array_equal(batch.spk_embed.data[i].numpy(), arrays["spk"][utt])
