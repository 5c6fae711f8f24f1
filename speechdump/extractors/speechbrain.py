"""SpeechBrain speaker encoders (ECAPA-TDNN, x-vector) via ``EncoderClassifier.from_hparams``.

Batched across utterances, keeping what a lone utterance gets. Each utterance's features and
sentence normalisation are computed on its own waveform; the frames are zero-padded into one
batch for the embedding model, which is told each item's exact frame count (the relative
lengths its masked pooling and squeeze-excitation use), and every "same"-padded convolution
pads each item at its own end (reflecting its own frames) instead of reading the batch padding.
Measured on the sample recordings against single-utterance ``encode_batch``: plain zero-padded
``encode_batch(wavs, wav_lens)`` batches reach cosine 0.99967 (ECAPA) and 0.99910 (x-vector),
0.9996 with exact lengths but shared padding; this reaches >= 0.9999997 for both (max abs
difference 4e-5 at embedding norms ~200; full-size ECAPA alike), and batches of 1, 30 and 300 s
agree within 1e-6 of the largest component. The x-vector's statistics pooling adds random
noise (1e-5..9e-5) to its means even at inference; it is pinned to what a lone utterance draws
after ``torch.manual_seed(0)``, so output is reproducible. Unknown architectures get batches of
identical lengths only (``equal_lengths_only``).
"""

from __future__ import annotations

import os
import re
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from speechdump.extractors.base import Extractor, looks_like_local_path

DEFAULT_SAMPLE_RATE = 16000



class _PerItemPadding:
    """Replaces a SpeechBrain ``Conv1d._manage_padding``: pads every item at its own end.

    SpeechBrain pads the time axis of a whole batch at once (reflect by default), so an item
    shorter than the batch sees the batch's padding instead of the reflection of its own last
    frames. This pads the frames of item ``i`` (``frames[i]`` of them) exactly as the
    convolution would pad that item alone; what follows lies beyond the item and is never read
    by its valid output frames. Without frame counts set it pads as SpeechBrain does.
    """

    def __init__(self, conv, state: "SpeechBrainExtractor"):
        self.conv = conv
        self.state = state
        self.original = conv._manage_padding

    def __call__(self, x, kernel_size, dilation, stride):
        frames = self.state._frames
        if frames is None:
            return self.original(x, kernel_size, dilation, stride)
        pad = dilation * (kernel_size - 1) // 2  # SpeechBrain's get_padding_elem for stride 1
        mode = self.conv.padding_mode
        total = x.shape[-1]
        if x.shape[0] != len(frames) or total != int(frames.max()):
            raise RuntimeError("per-item padding: the time axis is not the batch's frames")
        pos = torch.arange(-pad, total + pad, device=x.device)[None, :]  # [1, T + 2p]
        length = frames[:, None]
        if mode in ("constant", "zeros"):
            inside = (pos >= 0) & (pos < length)
            return F.pad(x, (pad, pad)) * inside[:, None, :].to(x.dtype)
        if mode == "reflect":
            src = torch.where(pos < 0, -pos,
                              torch.where(pos >= length, 2 * (length - 1) - pos, pos))
        elif mode == "replicate":
            src = torch.minimum(pos.clamp(min=0), length - 1)
        elif mode == "circular":
            src = torch.remainder(pos, length)
        else:
            raise RuntimeError(f"per-item padding: unknown padding mode {mode!r}")
        src = src.clamp(0, total - 1)
        return torch.gather(x, 2, src[:, None, :].expand(x.shape[0], x.shape[1], -1))


class SpeechBrainExtractor(Extractor):
    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        if model is None:
            raise ValueError(
                "speechbrain needs --model: a local directory in SpeechBrain's pretrained layout "
                "(hyperparams.yaml + checkpoints), or a hub name such as "
                "speechbrain/spkrec-ecapa-voxceleb")
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig

        kwargs = {}
        model = os.path.expanduser(model)
        if os.path.isdir(model):
            source = os.path.abspath(model)
            with open(os.path.join(source, "hyperparams.yaml"), encoding="utf-8") as f:
                defines_pretrained_path = re.search(r"^pretrained_path\s*:", f.read(), re.M)
            # Hub repos name themselves in ``pretrained_path`` (the pretrainer's checkpoint
            # paths); a local copy must load its own files, and nothing may be downloaded.
            kwargs["overrides"] = {"pretrained_path": source} if defines_pretrained_path else {}
            kwargs["fetch_config"] = FetchConfig(allow_network=False)
        elif looks_like_local_path(model):
            raise ValueError(f"speechbrain model '{model}' is not a directory")
        else:
            source = model  # a hub name: fetched (Hugging Face cache) because the user named it
        # savedir=None: SpeechBrain then loads every file where it lies (the local directory, or
        # the Hugging Face cache for a hub name) and writes nothing; with a savedir it would put
        # symlinks to each file there, i.e. write into the model directory or another folder.
        self.model = EncoderClassifier.from_hparams(
            source=source, savedir=None, run_opts={"device": device}, **kwargs)
        self.device = torch.device(device)
        if self.device.type == "cpu":
            # CPU convolutions of this size cost more per utterance in a batch than alone
            # (ECAPA C=1024 on the 26 samples: 3.4 s one by one, 4.1 s in batches of 4, 12.2 s
            # in one batch of 26), so on CPU utterances go alone; loaders still run ahead.
            self.max_batch_size = 1
        self.model.eval()
        mods = self.model.mods
        hparams = vars(self.model.hparams)

        stft = getattr(mods.compute_features, "compute_STFT", None)
        self.sample_rate = int(hparams.get("sample_rate")
                               or getattr(stft, "sample_rate", None) or DEFAULT_SAMPLE_RATE)
        self.hop = hop = int(getattr(stft, "hop_length", None) or self.sample_rate // 100)

        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
        from speechbrain.lobes.models.Xvector import Xvector
        from speechbrain.nnet.CNN import Conv1d
        from speechbrain.nnet.pooling import StatisticsPooling

        self._frames: Optional[torch.Tensor] = None  # frame counts of the batch in forward
        convs = [m for m in mods.embedding_model.modules()
                 if isinstance(m, Conv1d) and m.padding == "same"]
        widest = max((m.dilation * (m.kernel_size - 1) // 2 for m in convs), default=0)
        # min_seconds: the widest convolution (ECAPA: kernel 3, dilation 4, spanning 9 frames;
        # x-vector: kernel 3, dilation 3, 7 frames) must span real frames, not only its own
        # padding; below pad + 1 frames reflect padding is impossible and SpeechBrain itself
        # fails. Fbank frames are centred: n samples give 1 + n // hop frames, so at 10 ms hops
        # ECAPA needs 0.08 s and the x-vector 0.06 s; 0.05 s (6 frames) is refused by both.
        self.min_seconds = 2 * max(widest, 1) * hop / self.sample_rate

        batchable = isinstance(mods.embedding_model, (ECAPA_TDNN, Xvector)) and all(
            m.stride == 1 for m in convs)
        if batchable:
            for conv in convs:
                if conv.dilation * (conv.kernel_size - 1) // 2 > 0:
                    conv._manage_padding = _PerItemPadding(conv, self)
        else:
            # Unknown layers may mix time in ways the padding above does not cover.
            self.equal_lengths_only = True
        for pooling in mods.embedding_model.modules():
            if isinstance(pooling, StatisticsPooling):
                pooling._get_gauss_noise = _LoneUtteranceNoise(pooling)

    def prepare(self, wave: np.ndarray) -> torch.Tensor:
        """Features of one utterance, normalised on its own, as ``encode_batch`` of it alone
        computes them (wav_lens = 1); runs in loader threads, ahead of the model."""
        mods = self.model.mods
        with torch.inference_mode():
            wav = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
            ones = torch.ones(1, device=self.device)
            return mods.mean_var_norm(mods.compute_features(wav[None]), ones)[0]

    def cost(self, feats: torch.Tensor) -> float:
        return len(feats) * self.hop / self.sample_rate

    def forward(self, batch: List[torch.Tensor]) -> List[np.ndarray]:
        frames = torch.tensor([len(f) for f in batch], device=self.device)
        with torch.inference_mode():
            x = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            # A lone item has no batch padding to keep out: SpeechBrain's own padding is exact.
            self._frames = frames if len(batch) > 1 else None
            try:
                embeddings = self.model.mods.embedding_model(x, _relative_lengths(frames))
            finally:
                self._frames = None
        embeddings = embeddings.reshape(len(batch), -1).float().cpu().numpy()
        return [np.ascontiguousarray(e) for e in embeddings]


def _relative_lengths(frames: torch.Tensor) -> torch.Tensor:
    """Frame counts -> float32 relative lengths from which every SpeechBrain convention
    recovers the count exactly: ``rel * T`` must lie in ``(n - 0.5, n]`` for masks
    (``arange(T) < rel * T``) and for ``round(rel * T)`` alike."""
    total = int(frames.max())
    rel = (frames.double() / total).float()
    too_long = rel * total > frames.float()
    return torch.where(too_long, torch.nextafter(rel, torch.zeros_like(rel)), rel)


class _LoneUtteranceNoise:
    """``StatisticsPooling._get_gauss_noise`` pinned: each item gets the noise SpeechBrain draws
    for an utterance alone after ``torch.manual_seed(0)`` (same formula, same generator)."""

    def __init__(self, pooling):
        self.eps = pooling.eps
        self.cache = {}

    def __call__(self, shape, device="cpu"):
        key = (int(shape[-1]), str(device))
        if key not in self.cache:
            generator = torch.Generator(device=device).manual_seed(0)
            noise = torch.randn((1, shape[-1]), generator=generator, device=device)
            noise -= torch.min(noise)
            noise /= torch.max(noise)
            self.cache[key] = self.eps * ((1 - 9) * noise + 9)
        return self.cache[key].expand(shape)
