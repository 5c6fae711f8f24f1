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
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from speechdump.errors import ScpReadError
from speechdump.kaldi_io import load_entry, read_scp_table

__all__ = ["ScpDataset", "ScpReadError", "collate_padded", "speechbrain_item"]


class ScpDataset(Dataset):
    """Item ``i`` -> ``{"id": utt, name: array, ...}``, one array per named scp.

    ``scps``: ``{name: scp path}``; ``keys``: the utterance ids, in order (default: the first
    scp's, in file order). Every id must be in every scp; a missing one raises a KeyError
    naming the scp. Only the scp text is read here; arrays are read per item.
    """

    def __init__(self, scps: Mapping[str, str], keys: Optional[Sequence[str]] = None):
        if not scps:
            raise ValueError("ScpDataset needs at least one scp")
        if "id" in scps:
            raise ValueError("'id' is the utterance id's name in every item; name the scp "
                             "otherwise")
        self.scps = dict(scps)
        self.tables = {name: read_scp_table(path) for name, path in self.scps.items()}
        first = next(iter(self.tables.values()))
        self.keys: List[str] = list(first) if keys is None else list(keys)
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
            item[name] = load_entry(table[utt], utt, self.scps[name], writable=True)
        return item


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
        self.table = read_scp_table(scp)

    def __call__(self, utt: str) -> torch.Tensor:
        if utt not in self.table:
            raise KeyError(f"utterance '{utt}' is not in the scp {self.scp}")
        return torch.from_numpy(np.asarray(load_entry(self.table[utt], utt, self.scp,
                                                      writable=True)))


def speechbrain_item(scp: str, provides: str = "feats"):
    """A SpeechBrain dynamic item that takes ``"id"`` and provides ``provides``: the
    utterance's array of ``scp`` as a tensor, read when the item is computed.

    For ``DynamicItemDataset.add_dynamic_item``; call it once per scp (features, speaker
    embeddings...), each with its own ``provides`` name.
    """
    from speechbrain.utils.data_pipeline import provides as sb_provides
    from speechbrain.utils.data_pipeline import takes

    return takes("id")(sb_provides(provides)(_ScpItem(scp)))
