"""ESPnet speaker models (egs2/*/spk1: RawNet3, ECAPA-TDNN, SKA-TDNN, x-vector, ...).

Both extractors load the model with ESPnet's own ``espnet2.bin.spk_inference.Speech2Embedding``
and call its ``spk_model`` exactly as ``Speech2Embedding.__call__`` does
(``spk_model(speech=float32 [B, T], extract_embd=True)``, no ``speech_lengths``, under no_grad);
they only put several utterances (or crops) in one forward pass.

Weights are loaded strictly. ESPnet's ``build_model_from_file`` loads the model file with
``load_state_dict(strict=False)``, so a training checkpoint (``checkpoint.pth``: model,
optimizers, ... states) ran a randomly initialised model, and weights of another architecture a
partly random one. Here the model is built from the config alone (``Speech2Embedding`` without
a model file), the file's tensors are compared with the model's (``speechdump.weights``), and
only an exact match is loaded, as ``build_model_from_file`` would load it. The pre-flight
(``check``) already refuses a file that is not a model state (its keys only are read).

``--model`` (a local path; nothing is downloaded unless it is not a path, see below) is one of:

* a directory holding ``config.yaml`` (the train config ESPnet writes into ``exp/spk_*``) and
  exactly one ``*.pth`` (a state dict such as ``valid.eer.best.pth``): an ``exp/spk_*`` dir with
  only the chosen model file, or the folder of an unpacked model-zoo entry that holds them;
* a ``*.pth`` file, whose train config is the ``config.yaml`` beside it (ESPnet's own
  convention in ``AbsTask.build_model_from_file``), for a dir with several ``*.pth``;
* the root of an unpacked ESPnet model-zoo archive: a directory with ``meta.yaml`` whose
  ``yaml_files: train_config`` and ``files: model_file`` name the two files (relative paths are
  taken from that directory), as ``espnet_model_zoo`` unpacks them;
* anything that is not an existing path is taken as a model-zoo tag, fetched as
  ``Speech2Embedding.from_pretrained(model_tag=...)`` fetches it (``espnet_model_zoo``'s
  ``ModelDownloader``; needs network).

The sample rate is the config's ``preprocessor_conf: sample_rate``, else its ``sample_rate``,
else 16000.

Lengths: ESPnet speaker models cannot be told the true length of a padded input.
``ESPnetSpeakerModel.forward`` does take ``speech_lengths`` and passes frame lengths on to the
pooling (``chn_attn_stat``, ``stats`` and ``mean`` pooling mask with them), but everything before
it ignores them: ``AsteroidFrontend`` instance-normalises the whole (padded) waveform and
subtracts the mean over all frames; ``MelSpectrogramTorch`` returns the padded frame count as
every item's length and its ``normalize: mn`` mean runs over all frames; ``encode_frame(feats)``
calls the encoder without lengths, and the encoders (``RawNet3Encoder``, ``EcapaTdnnEncoder``,
...) convolve across the padding and average over the whole time axis in their AFMS / SE blocks
(``adaptive_avg_pool1d``); RawNet3 also pools time by 15 while the lengths handed to the pooling
stay in frontend frames. Zero padding therefore changes every embedding, so ``espnet`` batches
only utterances of identical length, and ``rawnet`` batches fixed-length crops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from speechdump import compat, weights
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import Extractor, Option, layout_hint, positive

DEFAULT_SAMPLE_RATE = 16000

# Shortest input accepted, for both extractors. The models would run on less (ESPnet's smallest
# working input is ~0.03 s: one 251-tap sinc kernel plus RawNet3's x15 time pooling, or 257
# samples for the mel STFT's reflect padding), but at 0.1 s the statistics pooling already sees
# only ~5 RawNet3 (15 ms) or ~11 ECAPA (10 ms) frames, and ``rawnet`` would tile anything shorter
# over 30 times to fill a 3 s crop: an embedding of almost nothing. Same limit as Resemblyzer's.
MIN_SECONDS = 0.1

MODEL_FILE_HINT = (": pass the model file (e.g. valid.eer.best.pth, or the 'model' entry saved "
                   "alone)")


def _model_files(path: Path) -> dict:
    """``{train_config, model_file}`` for a local ``--model`` path (see the module docstring)."""
    if path.is_file():
        if path.suffix != ".pth":
            raise ModelError(f"--model {path}: expected a directory or a *.pth model file")
        config = path.parent / "config.yaml"
        if not config.is_file():
            raise ModelError(f"--model {path}: no config.yaml beside the model file")
        return {"train_config": str(config), "model_file": str(path)}
    if (path / "config.yaml").is_file():
        pths = sorted(p.name for p in path.glob("*.pth"))
        if len(pths) != 1:
            found = ", ".join(pths) if pths else "none"
            raise ModelError(f"--model {path}: expected exactly one *.pth beside config.yaml, "
                             f"found {found}; pass the model file itself as --model")
        return {"train_config": str(path / "config.yaml"), "model_file": str(path / pths[0])}
    if (path / "meta.yaml").is_file():
        import yaml

        with open(path / "meta.yaml", encoding="utf-8") as f:
            meta = yaml.safe_load(f) or {}
        config = (meta.get("yaml_files") or {}).get("train_config")
        model_file = (meta.get("files") or {}).get("model_file")
        if not config or not model_file:
            raise ModelError(f"--model {path}: meta.yaml names no yaml_files: train_config "
                             "and files: model_file")
        return {"train_config": str(path / config), "model_file": str(path / model_file)}
    raise ModelError(f"--model {path}: expected config.yaml and one *.pth (an exp/spk_* dir), "
                     "a *.pth file with config.yaml beside it, or an unpacked model-zoo dir "
                     f"with meta.yaml{layout_hint(str(path))}")


def _import_speech2embedding():
    """``espnet2.bin.spk_inference.Speech2Embedding``, imported without ESPnet's type checks
    and with the text front-ends standing in (``speechdump.compat.import_unchecked``): 2.7 s
    and more of every job's start, and no nltk.download on an offline node. Speaker models
    never tokenize or clean text; should anything do so later, the modules load then."""
    module = compat.import_unchecked("espnet2.bin.spk_inference", compat.ESPNET_TEXT_MODULES)
    return module.Speech2Embedding


def load_speech2embedding(model: Optional[str], device: str = "cpu"):
    """ESPnet's ``Speech2Embedding`` for ``--model`` (local layouts above, else a zoo tag), with
    the model file's weights loaded only if they are exactly the model's (module docstring)."""
    if not model:
        raise ModelError(f"the ESPnet toolkits need --model: {_ESPnetBase.model_help}")
    Speech2Embedding = _import_speech2embedding()

    path = Path(os.path.expanduser(model))
    files = _model_files(path) if path.exists() else _zoo_files(model)
    state = model_state(files["model_file"])
    # build_model_from_file without a model file: builds the model (and any adapter), loads
    # nothing; the weights follow once they are known to fit.
    speech2embedding = Speech2Embedding(train_config=files["train_config"], device=device)
    weights.check_module(speech2embedding.spk_model, state, files["model_file"],
                         what=f"the model {files['train_config']} builds")
    weights.load(speech2embedding.spk_model, state)
    return speech2embedding


def model_state(model_file: str) -> Dict[str, torch.Tensor]:
    """The state dict an ESPnet model file holds (a DeepSpeed file's "module" entry, as
    ``build_model_from_file`` takes it); a training checkpoint or any other object is a
    ModelError naming the file. Reads the tensors' names and shapes only (mmap)."""
    state = weights.read(model_file, MODEL_FILE_HINT)
    if isinstance(state, Mapping) and "module" in state:
        state = state["module"]
    return weights.as_state(state, model_file, MODEL_FILE_HINT)


def _zoo_files(tag: str) -> Dict[str, str]:
    """``{train_config, model_file}`` of a model-zoo tag, fetched as
    ``Speech2Embedding.from_pretrained`` fetches them."""
    try:
        from espnet_model_zoo.downloader import ModelDownloader
    except ImportError as exc:
        raise ModelError(f"--model {tag}: no such file or directory, and as an ESPnet "
                         f"model-zoo tag it needs espnet_model_zoo ({exc})") from exc
    files = ModelDownloader().download_and_unpack(tag)
    if not files.get("train_config") or not files.get("model_file"):
        raise ModelError(f"--model {tag}: the model-zoo entry names no train_config and "
                         f"model_file ({', '.join(files)})")
    return {"train_config": str(files["train_config"]), "model_file": str(files["model_file"])}


def _sample_rate(train_args) -> int:
    conf = getattr(train_args, "preprocessor_conf", None) or {}
    rate = conf.get("sample_rate") or getattr(train_args, "sample_rate", None)
    return int(rate or DEFAULT_SAMPLE_RATE)


class _ESPnetBase(Extractor):
    concurrent_forward = True
    # its speaker encoders are convolutional, as SpeechBrain's ECAPA, which runs faster
    # intra_op
    cpu_layout = "intra_op"
    min_seconds = MIN_SECONDS
    needs_model = True
    packages = ("espnet",)

    @classmethod
    def model_files(cls, model):
        path = Path(os.path.expanduser(model)) if model else None
        if path is None or not path.exists():
            return []  # a model-zoo tag: recorded by name
        return sorted(_model_files(path).values())
    model_help = ("a directory with config.yaml and one *.pth (e.g. exp/spk_train_rawnet3_raw_sp), "
                  "a *.pth file with config.yaml beside it, an unpacked model-zoo dir (meta.yaml), "
                  "or a model-zoo tag")

    @classmethod
    def check(cls, model, options):
        streams = super().check(model, options)
        path = Path(os.path.expanduser(model))
        if path.exists():
            files = _model_files(path)
            config = files["train_config"]
            try:
                import yaml

                with open(config, encoding="utf-8") as f:
                    train_args = yaml.safe_load(f)
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ModelError(f"cannot read {config}: {exc}") from exc
            if not isinstance(train_args, dict) or "encoder" not in train_args:
                raise ModelError(f"{config} is not an ESPnet train config (no encoder: entry)")
            # A training checkpoint or other non-model file, caught before jobs launch; its
            # tensors are compared with the model's at the start of each job (building the
            # model takes ESPnet's import).
            model_state(files["model_file"])
        return streams

    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        self.speech2embedding = load_speech2embedding(model, device)
        self.model = self.speech2embedding.spk_model.eval()
        self.device = torch.device(device)
        self.dtype = getattr(torch, self.speech2embedding.dtype)
        self.sample_rate = _sample_rate(self.speech2embedding.spk_train_args)

    @torch.no_grad()
    def _embed(self, speech: np.ndarray) -> np.ndarray:
        """``[B, T]`` equal-length waves -> ``[B, D]``, as ``Speech2Embedding.__call__`` does."""
        batch = torch.from_numpy(np.ascontiguousarray(speech)).to(self.dtype).to(self.device)
        return self.model(speech=batch, extract_embd=True).float().cpu().numpy()


@register("espnet")
class ESPnetExtractor(_ESPnetBase):
    """``--toolkit espnet``: ``Speech2Embedding(wave)`` of each whole utterance, batched.

    ``Speech2Embedding`` does no preprocessing of its own (the wave is cast to float32 and
    given a batch axis), so ``prepare`` only makes the float32 wave. The model cannot be told
    true lengths (module docstring), hence ``equal_lengths_only``: the engine puts only
    utterances of identical sample count in one batch, which are stacked unpadded and give what
    each gives alone. The embedding is the model's raw output (not L2-normalised), as
    ``Speech2Embedding`` returns it.
    """

    equal_lengths_only = True

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(wave, dtype=np.float32)

    def cost(self, wave: np.ndarray) -> float:
        return len(wave) / self.sample_rate

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        if len({len(w) for w in batch}) != 1:
            raise RuntimeError("ESPnet speaker models cannot be given padded batches: "
                               f"lengths {sorted({len(w) for w in batch})} in one batch")
        return list(self._embed(np.stack(batch)))


@register("rawnet")
class RawNet3Extractor(_ESPnetBase):
    """``--toolkit rawnet``: RawNet3 / VoxCeleb multi-crop embedding of each utterance.

    As ESPnet's ``SpkPreprocessor`` does for evaluation (``train=False``), and the RawNet3 /
    voxceleb_trainer evaluation before it: an utterance shorter than a crop is repeat-padded
    (``np.pad(..., "wrap")``) to the crop length plus one sample; ``num_crops`` crops of
    ``crop_seconds`` start at ``int(s)`` for ``s`` in
    ``np.linspace(0, len(wave) - crop_samples, num_crops)``, evenly spread over the utterance.
    Each crop is embedded alone by the model (crops never see each other: they have one length,
    so are stacked with no padding), every crop embedding is L2-normalised, and the utterance
    vector is their mean, not normalised again: the dot product of two such vectors is the mean
    cosine over all crop pairs of the two utterances (the multi-crop score), and its norm (<= 1)
    tells how much the crops agree.

    Batched across utterances: ``prepare`` builds the ``[num_crops, crop_samples]`` matrix of
    one utterance, ``forward`` runs the crops of every utterance in the batch in a single pass.
    """

    NUM_CROPS = 10
    CROP_SECONDS = 3.0
    options = (Option("num_crops", int, NUM_CROPS, "crops per utterance", check=positive),
               Option("crop_seconds", float, CROP_SECONDS, "seconds per crop", check=positive))

    def __init__(self, model: Optional[str] = None, device: str = "cpu",
                 num_crops: int = NUM_CROPS, crop_seconds: float = CROP_SECONDS):
        super().__init__(model, device)
        if num_crops < 1 or crop_seconds <= 0:
            raise OptionError("num_crops must be >= 1 and crop_seconds > 0")
        self.num_crops = int(num_crops)
        self.crop_seconds = float(crop_seconds)
        self.crop_samples = int(self.crop_seconds * self.sample_rate)  # as SpkPreprocessor

    def crop_starts(self, num_samples: int) -> np.ndarray:
        """Start samples of the crops of a (padded) wave of ``num_samples``."""
        starts = np.linspace(0, num_samples - self.crop_samples, num=self.num_crops)
        return starts.astype(np.int64)  # int(frame) of each, as SpkPreprocessor takes them

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Waveform -> its crops ``[num_crops, crop_samples]`` float32."""
        wave = np.asarray(wave, dtype=np.float32)
        if len(wave) < self.crop_samples:
            wave = np.pad(wave, (0, self.crop_samples - len(wave) + 1), "wrap")
        return np.stack([wave[s:s + self.crop_samples] for s in self.crop_starts(len(wave))])

    def cost(self, crops: np.ndarray) -> float:
        return crops.size / self.sample_rate  # num_crops * crop_seconds

    def batch_cost(self, costs) -> float:
        return sum(costs)  # crops are stacked, never padded

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        crops = self._embed(np.concatenate(batch))
        crops /= np.maximum(np.linalg.norm(crops, axis=1, keepdims=True), 1e-12)  # F.normalize
        bounds = np.cumsum([len(c) for c in batch])[:-1]
        return [part.mean(axis=0).astype(np.float32) for part in np.split(crops, bounds)]
