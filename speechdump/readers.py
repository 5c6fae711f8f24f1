"""Reading dumped arrays at training time: a PyTorch Dataset, a padding collate, SpeechBrain items.

Everything here reads Kaldi scps (``<utt> <ark>:<offset>`` lines, as speechdump writes them;
any entry ``kaldiio.load_mat`` reads also works: pipes, ``[slices]``). Construction reads the
scp text only; each array is read from its ark when asked for, opening the ark for that read
and closing it again. No file handle is ever held, so a dataset made before a ``DataLoader``
forks its workers is safe to use in them (a handle inherited across fork would share one file
offset between processes), and it pickles for the ``spawn`` start method too.

PyTorch::

    from torch.utils.data import DataLoader
    from speechdump.readers import ScpDataset, collate_padded

    d = "dump/wavlm_large/train"
    dataset = ScpDataset({"feats": f"{d}/feats_layer6.scp", "spk": f"{d}/spk_embed.scp"})
    dataset[0]  # {"id": "utt1", "feats": array[frames, 1024], "spk": array[256]}
    loader = DataLoader(dataset, batch_size=16, num_workers=4, collate_fn=collate_padded)
    for batch in loader:
        batch["id"]  # list of utterance ids
        batch["feats"], batch["feats_lengths"]  # [16, max_frames, 1024], [16]

SpeechBrain (``DynamicItemDataset`` over any ``{utt id: {...}}`` data, e.g. from a json)::

    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechdump.readers import speechbrain_item

    data = DynamicItemDataset.from_json("train.json")
    data.add_dynamic_item(speechbrain_item(f"{d}/feats_layer6.scp", provides="feats"))
    data.add_dynamic_item(speechbrain_item(f"{d}/spk_embed.scp", provides="spk_embed"))
    data.set_output_keys(["id", "feats", "spk_embed"])

ESPnet2 reads these scps itself, lazily, with its ``kaldi_ark`` loader::

    --train_data_path_and_name_and_type dump/<tag>/<set>/feats_layer6.scp,feats,kaldi_ark
    --train_data_path_and_name_and_type dump/<tag>/<set>/spk_embed.scp,spembs,kaldi_ark

(with ``--input_size <dim>`` and no frontend for frame-level features; in ``asr.sh`` that is
``--feats_type extracted``).

Shards (``speechdump.shards``: ``.bin``/``.idx`` pairs and a ``.json`` header, written by
``pyscripts/write_shards.py``) are read the same way: wherever an scp path is taken
(``ScpDataset``'s values, ``speechbrain_item``), a path ending in ``.json`` is a shard header.
``ShardReader`` is the direct reader for speech-LM training: item ``i`` (or ``reader.get(id)``)
is a slice of a memory-mapped ``.bin``, O(1), no file opened and nothing parsed per item::

    from speechdump.readers import LengthBucketSampler, ShardReader, collate_padded

    tokens = ShardReader("dump/tokens/train/shards/tokens.json")
    tokens[0], tokens.get("utt1"), tokens.ids[0], tokens.lengths[:4]
    sampler = LengthBucketSampler(tokens.lengths, max_frames=40000, shuffle=True, seed=0)
    loader = DataLoader(ShardDataset(tokens), batch_sampler=sampler, num_workers=4,
                        collate_fn=collate_padded)

A ``ShardReader`` maps its files on first use in each process (it notes the process id and
maps again after a fork; pickling drops the maps), so one made before a ``DataLoader`` forks
or spawns its workers shares no handle with them. Arrays it returns are read-only views of the
map; ``ShardDataset`` (and ``ScpDataset``) copy them into writable arrays for torch.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speechdump.errors import ScpReadError, ShardError
from speechdump.kaldi_io import load_entry, read_scp_table
from speechdump.shards import Shard, open_shard, read_header, shard_starts

__all__ = ["LengthBucketSampler", "ScpDataset", "ScpReadError", "ShardDataset", "ShardError",
           "ShardReader", "collate_padded", "is_shards", "speechbrain_item"]


def is_shards(path: str) -> bool:
    """A path read as a shard set (its ``.json`` header) rather than an scp."""
    return str(path).endswith(".json")


class ShardReader:
    """Random access to a shard set (see ``speechdump.shards``) by index or utterance id.

    Construction reads the header and the indexes (ids, lengths: small) and checks every
    shard's files against them; the ``.bin`` files are mapped on first access in each process.
    ``reader[i]`` / ``reader.get(utt)``: a read-only [frames] or [frames, ...] view.
    """

    def __init__(self, header: str):
        self.header_path = header
        self.header = read_header(header)
        self.directory = os.path.dirname(os.path.abspath(header))
        self.dtype = np.dtype(self.header["dtype"])
        self.row_shape = tuple(self.header["row_shape"])
        self.row_size = int(np.prod(self.row_shape, dtype=np.int64))
        self.starts = shard_starts(self.header)
        ids: List[str] = []
        lengths = []
        for shard in self._open_all():
            ids.extend(shard[1])
            lengths.append(shard[0].lengths)
        self.ids: List[str] = ids
        self.lengths: np.ndarray = np.concatenate(lengths)
        self._index: Optional[Dict[str, int]] = None
        self._shards: Optional[List[Shard]] = None
        self._pid: Optional[int] = None

    def _open_all(self) -> List[tuple]:
        return [open_shard(self.directory, entry, self.dtype, self.row_size, self.header_path)
                for entry in self.header["shards"]]

    def _maps(self) -> List[Shard]:
        if self._shards is None or self._pid != os.getpid():
            self._shards = [shard for shard, _ in self._open_all()]
            self._pid = os.getpid()
        return self._shards

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} of {len(self)} utterances in {self.header_path}")
        index %= len(self)
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        shard = self._maps()[k]
        j = index - int(self.starts[k])
        start = int(shard.offsets[j])
        frames = int(shard.lengths[j])
        flat = shard.data[start:start + frames * self.row_size]
        return np.asarray(flat).reshape((frames, *self.row_shape))

    def index(self, utt: str) -> int:
        """The position of ``utt``; KeyError naming the header if absent."""
        if self._index is None:
            self._index = {utt: i for i, utt in enumerate(self.ids)}
        if utt not in self._index:
            raise KeyError(f"utterance '{utt}' is not in the shards {self.header_path}")
        return self._index[utt]

    def __contains__(self, utt: str) -> bool:
        try:
            self.index(utt)
        except KeyError:
            return False
        return True

    def get(self, utt: str) -> np.ndarray:
        return self[self.index(utt)]


class ShardDataset(Dataset):
    """Item ``i`` -> ``{"id": utt, name: array}`` of a ShardReader (a writable copy)."""

    def __init__(self, shards: Union[str, ShardReader], name: str = "tokens"):
        self.reader = shards if isinstance(shards, ShardReader) else ShardReader(shards)
        self.name = name

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict:
        return {"id": self.reader.ids[index], self.name: np.array(self.reader[index])}


class LengthBucketSampler(Sampler):
    """Batches of indices of similar length (a ``DataLoader`` ``batch_sampler``).

    Indices are sorted by length and cut into ``num_buckets`` buckets of equal count; each
    bucket (shuffled within when ``shuffle``) is cut into batches of at most ``max_frames``
    padded frames (longest x batch size) and ``max_batch`` items; the batch order is shuffled
    too. ``set_epoch`` changes the shuffle, as DistributedSampler's does.
    """

    def __init__(self, lengths: Sequence[int], max_frames: int, max_batch: Optional[int] = None,
                 num_buckets: int = 10, shuffle: bool = True, seed: int = 0):
        if max_frames < 1:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_frames, self.max_batch = max_frames, max_batch
        self.num_buckets = max(1, min(num_buckets, len(self.lengths)))
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = np.argsort(self.lengths, kind="stable")
        batches: List[List[int]] = []
        for bucket in np.array_split(order, self.num_buckets):
            if self.shuffle:
                bucket = rng.permutation(bucket)
            batch: List[int] = []
            longest = 0
            for i in bucket.tolist():
                longer = max(longest, int(self.lengths[i]), 1)
                full = (self.max_batch is not None and len(batch) >= self.max_batch)
                if batch and (longer * (len(batch) + 1) > self.max_frames or full):
                    batches.append(batch)
                    batch, longer = [], max(int(self.lengths[i]), 1)
                batch.append(i)
                longest = longer
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


class ScpDataset(Dataset):
    """Item ``i`` -> ``{"id": utt, name: array, ...}``, one array per named scp.

    ``scps``: ``{name: scp path}``; a path ending in ``.json`` (or a ShardReader) is a shard
    set, read through a ShardReader. ``keys``: the utterance ids, in order (default: the first
    source's, in file order). Every id must be in every source; a missing one raises a KeyError
    naming the scp. Only the scp text (and shard indexes) are read here; arrays per item.
    """

    def __init__(self, scps: Mapping[str, str], keys: Optional[Sequence[str]] = None):
        if not scps:
            raise ValueError("ScpDataset needs at least one scp")
        if "id" in scps:
            raise ValueError("'id' is the utterance id's name in every item; name the scp "
                             "otherwise")
        self.scps = {name: getattr(path, "header_path", path) for name, path in scps.items()}
        self.tables: Dict[str, Union[Dict[str, str], ShardReader]] = {
            name: _source(path) for name, path in scps.items()}
        first = next(iter(self.tables.values()))
        self.keys: List[str] = (list(getattr(first, "ids", first)) if keys is None
                                else list(keys))
        for name, table in self.tables.items():
            missing = [k for k in self.keys if k not in table]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise KeyError(f"utterance '{missing[0]}'{more} is not in the '{name}' scp "
                               f"{self.scps[name]}")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        return self.get(self.keys[index])

    def get(self, utt: str) -> dict:
        """The item of utterance ``utt``."""
        item = {"id": utt}
        for name, table in self.tables.items():
            if utt not in table:
                raise KeyError(f"utterance '{utt}' is not in the '{name}' scp {self.scps[name]}")
            if isinstance(table, ShardReader):
                item[name] = np.array(table.get(utt))
            else:
                item[name] = load_entry(table[utt], utt, self.scps[name], writable=True)
        return item


def _source(path: Union[str, ShardReader]) -> Union[Dict[str, str], ShardReader]:
    """An scp's table, or the ShardReader of a shard header."""
    if isinstance(path, ShardReader):
        return path
    return ShardReader(path) if is_shards(path) else read_scp_table(path)


def collate_padded(items: Sequence[dict], float_pad_value: float = 0.0,
                   int_pad_value: int = -1) -> dict:
    """``DataLoader`` collate for ScpDataset items (ESPnet's convention).

    Returns ``{"id": [utt, ...], name: tensor[B, max_len, ...], name + "_lengths":
    LongTensor[B], ...}``: every array is padded along its first axis (frames, tokens; a
    fixed-size vector just gets its size as length) with ``float_pad_value`` for floating
    types and ``int_pad_value`` for integers (-1, never a valid token id).
    """
    if not items:
        raise ValueError("collate_padded got an empty batch")
    batch: dict = {"id": [item["id"] for item in items]}
    for name in items[0]:
        if name == "id":
            continue
        tensors = [torch.as_tensor(item[name]) for item in items]
        if any(t.dim() == 0 for t in tensors):
            batch[name] = torch.stack(tensors)
            continue
        trailing = {tuple(t.shape[1:]) for t in tensors}
        if len(trailing) > 1:
            raise ValueError(f"'{name}' arrays differ beyond their first axis: "
                             f"{sorted(trailing)}")
        lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
        pad = float_pad_value if tensors[0].is_floating_point() else int_pad_value
        padded = tensors[0].new_full((len(tensors), int(lengths.max()), *tensors[0].shape[1:]),
                                     pad)
        for i, t in enumerate(tensors):
            padded[i, :t.shape[0]] = t
        batch[name] = padded
        batch[f"{name}_lengths"] = lengths
    return batch


class _ScpItem:
    """Utterance id -> its array of one scp as a tensor (a picklable callable)."""

    def __init__(self, scp: str):
        self.scp = scp
        self.table = _source(scp)

    def __call__(self, utt: str) -> torch.Tensor:
        if utt not in self.table:
            raise KeyError(f"utterance '{utt}' is not in the scp {self.scp}")
        if isinstance(self.table, ShardReader):
            return torch.from_numpy(np.array(self.table.get(utt)))
        return torch.from_numpy(np.asarray(load_entry(self.table[utt], utt, self.scp,
                                                      writable=True)))


def speechbrain_item(scp: str, provides: str = "feats"):
    """A SpeechBrain dynamic item that takes ``"id"`` and provides ``provides``: the
    utterance's array of ``scp`` (or of the shard set whose ``.json`` header it names) as a
    tensor, read when the item is computed.

    For ``DynamicItemDataset.add_dynamic_item``; call it once per scp (features, speaker
    embeddings...), each with its own ``provides`` name.
    """
    from speechbrain.utils.data_pipeline import provides as sb_provides
    from speechbrain.utils.data_pipeline import takes

    return takes("id")(sb_provides(provides)(_ScpItem(scp)))
