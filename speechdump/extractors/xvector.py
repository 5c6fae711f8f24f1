"""Speaker embeddings of transformers' x-vector heads (``WavLMForXVector``,
``UniSpeechSatForXVector``, ``Wav2Vec2ForXVector``), e.g. microsoft/wavlm-base-plus-sv.

``--model`` is a local directory holding the model (``config.json`` with one of those
architectures, the weights) and its ``preprocessor_config.json`` (a
``Wav2Vec2FeatureExtractor``); or a hub name. Output: the model's ``embeddings`` (the
x-vector, ``xvector_output_dim`` floats) per utterance, one float vector stream, so the speaker
stage (scripts/extract_spk_embed.sh) writes utterance vectors and their speaker means.

Preprocessing: the feature extractor on each utterance alone (``do_normalize``: zero mean,
unit variance), before any padding. Batching: items are zero-padded and the model told their
lengths (``attention_mask``); the TDNN reads valid frames only (no padding, so a valid output
reads only valid inputs) and the statistics pooling takes each item's true frames. What the
mask does not cover is fixed (speechdump/compat.py): in the group-norm (base) layout the
convolutions up to the last GroupNorm run on each item alone (``compat.patch_group_norm``, as
in the ssl toolkit), whose statistics would otherwise span the padding; and transformers counts
the TDNN's output frames without its dilations, so the pooling of a shorter item would also
average frames computed from the padding (``compat.patch_tdnn_lengths``). Without these, a
padded batch differed from the utterances alone by up to 0.06 (group norm) and 0.03 (layer
norm) in embeddings of magnitude up to 1. Measured on the sample recordings with the
random-init models of test/build_hf_models.py (test/test_xvector.py): batched equals alone
within float rounding for all three heads, group-norm and layer-norm layouts.

Shortest input: the statistics pooling takes a standard deviation over the TDNN's output
frames, which needs two of them: ``2 + sum((kernel - 1) * dilation)`` encoder frames, i.e.
``receptive field + (that - 1) * 320`` samples (5200, 0.325 s, for the TDNN of
wavlm-base-plus-sv); shorter input is refused as a bad utterance.
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from speechdump import compat, hf_models
from speechdump.batching import pad
from speechdump.errors import ModelError
from speechdump.extractors import register
from speechdump.extractors.base import VECTOR, BatchState, Extractor, Stream
from speechdump.lazy import torch

MODEL_TYPES = ("wavlm", "unispeech-sat", "wav2vec2")
ARCHITECTURES = ("WavLMForXVector", "UniSpeechSatForXVector", "Wav2Vec2ForXVector")


@register("xvector")
class XVectorExtractor(Extractor):
    concurrent_forward = True
    # a transformers encoder as ssl's, which runs faster as passes
    cpu_layout = "passes"
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a transformers x-vector model (WavLMForXVector, "
                  "UniSpeechSatForXVector or Wav2Vec2ForXVector: config.json, model weights) and "
                  "its preprocessor_config.json, e.g. a copy of microsoft/wavlm-base-plus-sv, or "
                  "a hub name")
    options = ()
    streams = (Stream(shape=VECTOR),)

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        source, local = hf_models.resolve(model, cls.name)
        if not local:
            return [Stream(shape=VECTOR)]
        config = hf_models.read_config(source, cls.name, MODEL_TYPES)
        if not set(config.get("architectures") or ()) & set(ARCHITECTURES):
            raise ModelError(f"{cls.name} model '{model}' is a {config.get('architectures')}; "
                             f"{cls.name} loads {', '.join(ARCHITECTURES)}")
        return [Stream(shape=VECTOR, dim=config.get("xvector_output_dim"))]

    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        if model is None:
            raise ModelError(f"xvector needs --model: {self.model_help}")
        source, local = hf_models.resolve(model, self.name)
        self.feature_extractor = hf_models.load_feature_extractor(
            source, local, self.name, "Wav2Vec2FeatureExtractor")
        self.model = hf_models.load_checked("AutoModelForAudioXVector", source, local,
                                            MODEL_TYPES)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        config = self.model.config
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        kernels, strides = list(config.conv_kernel), list(config.conv_stride)
        receptive = 1 + sum((k - 1) * math.prod(strides[:i]) for i, k in enumerate(kernels))
        frames = 2 + sum((k - 1) * d for k, d in zip(config.tdnn_kernel, config.tdnn_dilation))
        self.min_seconds = (receptive + (frames - 1) * math.prod(strides)) / self.sample_rate
        self.streams = (Stream(shape=VECTOR, dim=int(config.xvector_output_dim)),)
        self._batch = BatchState()  # samples per item of a padded batch
        self._probes = [compat.patch_group_norm(self.model.base_model,
                                                lambda: self._batch.lengths),
                        compat.patch_tdnn_lengths(self.model)]
        if config.model_type == "wavlm":
            compat.quiet_wavlm_mask_warning()

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        values = self.feature_extractor(wave, sampling_rate=self.sample_rate,
                                        padding=False)["input_values"]
        return np.asarray(values[0], dtype=np.float32)

    def cost(self, prepared: np.ndarray) -> float:
        return len(prepared) / self.sample_rate

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        lengths = torch.tensor([len(x) for x in batch], dtype=torch.long)
        padded = bool(lengths.min() != lengths.max())
        inputs, _ = pad(batch, self.device)
        kwargs = {}
        if padded:
            steps = torch.arange(inputs.shape[1], device=self.device)
            kwargs["attention_mask"] = (steps[None, :] < lengths.to(self.device)[:, None]).long()
            self._batch.lengths = lengths
        try:
            with torch.inference_mode():
                embeddings = self.model(inputs, **kwargs).embeddings
        finally:
            self._batch.lengths = None
        if padded:
            for probe in self._probes:
                probe.verify()
        host = embeddings.float().cpu().numpy()
        return [np.array(row) for row in host]
