"""Loading transformers models for the extractors built on them (ssl, whisper, w2v_bert,
xvector, codec): the model dir checked against its layout (pre-flight), the feature extractor,
and the weights loaded strictly, with any auto class (an x-vector head needs
``AutoModelForAudioXVector``)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from speechdump import weights
from speechdump.errors import ModelError
from speechdump.extractors.base import layout_hint, looks_like_local_path
from speechdump.lazy import torch

# Tensors a checkpoint may lack: masked_spec_embed, the vector that replaces masked frames in
# training (SpecAugment-style masking in train mode, or mask_time_indices given); never used
# here. transformers creates it whenever the config's mask_time_prob or mask_feature_prob is
# > 0 (the defaults), so a checkpoint saved from a model configured without masking lacks it
# while the model built from an edited config has it.
HARMLESS_MISSING = ("masked_spec_embed",)
# The weight files transformers looks for in a local model dir, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def resolve(model: str, toolkit: str) -> Tuple[str, bool]:
    """``(source, local)``: an existing directory (local files only), or a hub name (fetched
    because the user named it); a path that does not exist is a ModelError."""
    path = os.path.expanduser(model)
    if os.path.isdir(path):
        return os.path.abspath(path), True
    if looks_like_local_path(model):
        raise ModelError(f"{toolkit} model '{model}' is not a directory")
    return model, False


def read_config(model: str, toolkit: str,
                model_types: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The pre-flight's view of a local model dir: its ``config.json`` (a ModelError unless its
    ``model_type`` is one of ``model_types``, where given) once ``preprocessor_config.json`` is
    there too."""
    path = os.path.expanduser(model)
    for name in ("config.json", "preprocessor_config.json"):
        if not os.path.isfile(os.path.join(path, name)):
            raise ModelError(f"{toolkit} model '{model}' has no {name}{layout_hint(path)}")
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config_path}: {exc}") from exc
    if model_types is not None and config.get("model_type") not in model_types:
        raise ModelError(f"{toolkit} model '{model}' is a {config.get('model_type')} model "
                         f"({config_path}); {toolkit} loads {', '.join(model_types)}")
    return config


def load_feature_extractor(source: str, local: bool, toolkit: str, expected: str):
    """``AutoFeatureExtractor.from_pretrained``; a ModelError unless it is an ``expected``."""
    from transformers import AutoFeatureExtractor

    try:
        fe = AutoFeatureExtractor.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{toolkit} model '{source}': no usable feature-extractor config "
                         f"(preprocessor_config.json): {exc}") from exc
    if type(fe).__name__ != expected:
        raise ModelError(f"{toolkit} model '{source}': its preprocessor_config.json describes a "
                         f"{type(fe).__name__}; {toolkit} needs a {expected}")
    return fe


def load_checked(auto_class: str, source: str, local: bool,
                 model_types: Optional[Sequence[str]] = None):
    """``transformers.<auto_class>.from_pretrained(source)`` in float32, refusing weights that
    do not fit.

    transformers initialises tensors missing from the file at random with only a log warning.
    Here any tensor missing (but ``HARMLESS_MISSING``), of another shape, or in the file under
    one of the model's own modules but unknown to it (e.g. ``encoder.layers.12.*`` for a
    12-layer config) is a ModelError naming the file. Tensors of modules the model does not
    have are allowed: they are the heads of a task model's checkpoint (``lm_head`` of a
    ``*ForCTC``, ``project_q``/``quantizer`` of a ``*ForPreTraining``, Whisper's ``proj_out``);
    the hidden states never use them, and transformers already strips the checkpoint's prefix
    (``wav2vec2.``, ...) from the model's own tensors. With ``model_types``, a model of another
    type is refused too."""
    import transformers

    loader = getattr(transformers, auto_class)
    model, info = loader.from_pretrained(
        source, local_files_only=local, dtype=torch.float32, output_loading_info=True,
        ignore_mismatched_sizes=True)  # reported below instead of raised without the names
    if model_types is not None and model.config.model_type not in model_types:
        raise ModelError(f"'{source}' is a {model.config.model_type} model; expected "
                         f"{', '.join(model_types)}")
    order = {name: i for i, name in enumerate(model.state_dict())}
    own = {name.split(".")[0] for name in order}
    missing = sorted((k for k in info["missing_keys"] if k not in HARMLESS_MISSING),
                     key=lambda k: order.get(k, len(order)))
    unexpected = sorted(k for k in info["unexpected_keys"] if k.split(".")[0] in own)
    mismatched = sorted((k, tuple(found), tuple(wanted))
                        for k, found, wanted in info["mismatched_keys"])
    path = weights_path(source)
    if info["error_msgs"]:
        raise ModelError(f"{path}: {'; '.join(map(str, info['error_msgs']))}")
    weights.refuse(path, len(order), missing, unexpected, mismatched,
                   what=f"the {type(model).__name__} {os.path.join(source, 'config.json')} "
                        f"describes" if local else f"the {type(model).__name__} of {source}")
    return model


def weights_path(source: str) -> str:
    """The weights file transformers loads from a local model dir (for messages)."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(source, name)):
            return os.path.join(source, name)
    return source
