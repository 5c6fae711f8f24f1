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

Checkpoints must fit: SpeechBrain's pretrainer loads each with ``load_state_dict(strict=False)``
and only logs tensors missing or extra, so a checkpoint of another architecture gave a randomly
initialised model. After loading, each module's tensors are compared with its file
(``speechdump.weights``), and any difference is a ModelError naming the file (at the start of
each job: building the modules is not a pre-flight's work).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, List, Optional

import numpy as np

from speechdump.errors import ModelError
from speechdump.extractors import register
from speechdump.extractors.base import BatchState, Extractor, layout_hint, looks_like_local_path

if TYPE_CHECKING:  # imported where the model runs: the pre-flight reads hyperparams.yaml only
    import torch

DEFAULT_SAMPLE_RATE = 16000


@register("speechbrain")
class SpeechBrainExtractor(Extractor):
    concurrent_forward = True
    # ECAPA C=1024: passes take 1.04-1.05 of its time (bench/cpu_layout.py): oneDNN's convolutions
    # of this width run better on two threads than beside each other
    cpu_layout = "intra_op"
    needs_model = True
    packages = ("speechbrain",)
    model_help = ("a local directory in SpeechBrain's pretrained layout (hyperparams.yaml + "
                  "checkpoints), or a hub name such as speechbrain/spkrec-ecapa-voxceleb")

    @classmethod
    def check(cls, model, options):
        streams = super().check(model, options)
        path = os.path.expanduser(model)
        if os.path.isdir(path):
            hparams = os.path.join(path, "hyperparams.yaml")
            if not os.path.isfile(hparams):
                raise ModelError(f"speechbrain model '{model}' has no hyperparams.yaml"
                                 f"{layout_hint(path)}")
            _read_text(hparams)
        elif looks_like_local_path(model):
            raise ModelError(f"speechbrain model '{model}' is not a directory")
        return streams

    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        if model is None:
            raise ModelError(f"speechbrain needs --model: {self.model_help}")
        import torch
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig

        from speechdump import compat

        kwargs = {}
        model = os.path.expanduser(model)
        if os.path.isdir(model):
            source = os.path.abspath(model)
            hparams = _read_text(os.path.join(source, "hyperparams.yaml"))
            defines_pretrained_path = re.search(r"^pretrained_path\s*:", hparams, re.M)
            # Hub repos name themselves in ``pretrained_path`` (the pretrainer's checkpoint
            # paths); a local copy must load its own files, and nothing may be downloaded.
            kwargs["overrides"] = {"pretrained_path": source} if defines_pretrained_path else {}
            kwargs["fetch_config"] = FetchConfig(allow_network=False)
        elif looks_like_local_path(model):
            raise ModelError(f"speechbrain model '{model}' is not a directory")
        else:
            source = model  # a hub name: fetched (Hugging Face cache) because the user named it
        # savedir=None: SpeechBrain then loads every file where it lies (the local directory, or
        # the Hugging Face cache for a hub name) and writes nothing; with a savedir it would put
        # symlinks to each file there, i.e. write into the model directory or another folder.
        try:
            self.model = EncoderClassifier.from_hparams(
                source=source, savedir=None, run_opts={"device": device}, **kwargs)
        except RuntimeError as exc:
            if "Error(s) in loading state_dict" not in str(exc):
                raise
            # Tensors of other shapes: SpeechBrain's transfer refuses them without naming the
            # file; the modules are built again to say which file and tensors.
            if os.path.isdir(source):
                _check_checkpoints(_collected_pretrainer(source, kwargs), source)
            raise ModelError(f"speechbrain model '{model}': a checkpoint does not fit the model "
                             f"hyperparams.yaml builds: {'; '.join(str(exc).split(chr(10)))}"
                             ) from exc
        # SpeechBrain loaded each checkpoint non-strictly: refuse files that do not fit.
        _check_checkpoints(self.model.hparams.pretrainer, source)
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

        self._batch = BatchState()  # frame counts of the batch in forward
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
        padded = [m for m in convs if m.dilation * (m.kernel_size - 1) // 2 > 0]
        # Patches of SpeechBrain internals (speechdump.compat), verified on first use.
        self._padding = compat.patch_speechbrain_padding(padded if batchable else [],
                                                         lambda: self._batch.frames)
        if not batchable:
            # Unknown layers may mix time in ways the padding above does not cover.
            self.equal_lengths_only = True
        self._noise = compat.patch_speechbrain_noise(
            [m for m in mods.embedding_model.modules() if isinstance(m, StatisticsPooling)])

    def prepare(self, wave: np.ndarray) -> torch.Tensor:
        """Features of one utterance, normalised on its own, as ``encode_batch`` of it alone
        computes them (wav_lens = 1); runs in loader threads, ahead of the model."""
        import torch

        mods = self.model.mods
        with torch.inference_mode():
            wav = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
            ones = torch.ones(1, device=self.device)
            return mods.mean_var_norm(mods.compute_features(wav[None]), ones)[0]

    def cost(self, feats: torch.Tensor) -> float:
        return len(feats) * self.hop / self.sample_rate

    def forward(self, batch: List[torch.Tensor]) -> List[np.ndarray]:
        import torch

        frames = torch.tensor([len(f) for f in batch], device=self.device)
        with torch.inference_mode():
            x = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
            # A lone item has no batch padding to keep out: SpeechBrain's own padding is exact.
            self._batch.frames = frames if len(batch) > 1 else None
            try:
                embeddings = self.model.mods.embedding_model(x, _relative_lengths(frames))
            finally:
                self._batch.frames = None
        if len(batch) > 1:
            self._padding.verify()
        self._noise.verify()
        embeddings = embeddings.reshape(len(batch), -1).float().cpu().numpy()
        return [np.ascontiguousarray(e) for e in embeddings]


def _check_checkpoints(pretrainer, source: str) -> None:
    """Every module that SpeechBrain's pretrainer loads with its parameter transfer
    (``torch_parameter_transfer``: ``load_state_dict(strict=False)``, a log warning per tensor
    missing or extra), compared with its checkpoint as that transfer reads it (SpeechBrain's
    renames of old key names applied): a ModelError naming the file if they differ. Modules
    with their own loader (``InputNormalization``'s statistics, the label encoder) are not
    parameter transfers and are left to it."""
    from speechbrain.utils.checkpoints import (DEFAULT_TRANSFER_HOOKS, get_default_hook,
                                               hook_on_loading_state_dict_checkpoint,
                                               torch_parameter_transfer)

    from speechdump import weights

    for name, module in pretrainer.loadables.items():
        if (name in pretrainer.custom_hooks or not pretrainer.is_loadable(name)
                or get_default_hook(module, DEFAULT_TRANSFER_HOOKS)
                is not torch_parameter_transfer):
            continue
        path = str(pretrainer.paths[name])
        state = hook_on_loading_state_dict_checkpoint(weights.as_state(weights.read(path), path))
        weights.check_module(module, state, path,
                             what=f"the {name} that {source}'s hyperparams.yaml builds")


def _collected_pretrainer(source: str, kwargs: dict):
    """The pretrainer of a local model dir, its modules built anew and its files located (as
    ``from_hparams`` does, loading nothing): for naming the file a failed load came from."""
    from hyperpyyaml import load_hyperpyyaml

    with open(os.path.join(source, "hyperparams.yaml"), encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, kwargs.get("overrides", {}))
    pretrainer = hparams["pretrainer"]
    pretrainer.collect_files(default_source=source, fetch_config=kwargs["fetch_config"])
    return pretrainer


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _relative_lengths(frames: torch.Tensor) -> torch.Tensor:
    """Frame counts -> float32 relative lengths from which every SpeechBrain convention
    recovers the count exactly: ``rel * T`` must lie in ``(n - 0.5, n]`` for masks
    (``arange(T) < rel * T``) and for ``round(rel * T)`` alike."""
    import torch

    total = int(frames.max())
    rel = (frames.double() / total).float()
    too_long = rel * total > frames.float()
    return torch.where(too_long, torch.nextafter(rel, torch.zeros_like(rel)), rel)
