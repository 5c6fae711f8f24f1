"""Extractor registry: ``--toolkit`` names map to classes, imported only when chosen."""

from __future__ import annotations

import importlib
import inspect
from typing import Optional

from speechdump.extractors.base import Extractor

_REGISTRY = {
    "resemblyzer": "speechdump.extractors.resemblyzer:ResemblyzerExtractor",
    "speechbrain": "speechdump.extractors.speechbrain:SpeechBrainExtractor",
    "espnet": "speechdump.extractors.espnet:ESPnetExtractor",
    "rawnet": "speechdump.extractors.espnet:RawNet3Extractor",
    "ssl": "speechdump.extractors.ssl:SSLExtractor",
    "fbank": "speechdump.extractors.kaldi_feats:FbankExtractor",
    "mfcc": "speechdump.extractors.kaldi_feats:MfccExtractor",
}


def available() -> list:
    return sorted(_REGISTRY)


def load_extractor(toolkit: str, model: Optional[str] = None, device: str = "cpu",
                   **options) -> Extractor:
    """Builds the extractor named ``toolkit``; ``model`` is a local path (each toolkit's layout);
    ``options`` are the extractor's own (``layers``, ``num_mel_bins``, ...): one it does not
    take raises TypeError naming it."""
    if toolkit not in _REGISTRY:
        raise ValueError(f"unknown toolkit '{toolkit}'; choose from {', '.join(available())}")
    module_name, class_name = _REGISTRY[toolkit].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    unknown = set(options) - set(inspect.signature(cls.__init__).parameters)
    if unknown:
        raise TypeError(f"{toolkit} takes no option {', '.join('--' + o for o in sorted(unknown))}")
    extractor = cls(model=model or None, device=device, **options)
    if device.startswith("cuda"):
        # After the toolkit's import: `import speechbrain` turns TF32 on (its "allow_tf32" quirk).
        exact_float32_on_gpu()
    return extractor


def exact_float32_on_gpu() -> None:
    """Turns TF32 off for this process's CUDA convolutions and matrix products.

    cuDNN convolves in TF32 by default (10-bit mantissas), with an algorithm chosen by the batch
    shape, so a padded batch differed from each utterance alone by up to 1e-2 of the hidden
    states' scale on an H200 (bench/RESULTS.md). Outputs must not depend on batching.
    """
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
