"""Hidden states of w2v-BERT 2.0 (``Wav2Vec2BertModel`` with ``SeamlessM4TFeatureExtractor``).

``--model`` is a local directory holding the model (``config.json``, the weights) and its
``preprocessor_config.json``, e.g. a copy of facebook/w2v-bert-2.0; or a hub name.

Input: the feature extractor's 80-bin Kaldi fbank (25 ms windows every 10 ms), normalised per
mel bin over the utterance alone, then stacked in pairs (``stride`` 2): 160-dim frames every
20 ms. It is computed in the loader threads for each utterance alone, exactly as
``SeamlessM4TFeatureExtractor(wave)`` makes it; for an odd number of fbank frames that call
adds a padded frame (masked out) to make the pairs, which is kept, so the model sees the same
input. True frame count: ``frames = (1 + (samples - 400) // 160) // 2`` (the feature
extractor's own attention mask); the shortest input with a frame is 560 samples (35 ms).

Options: ``--layers`` as the ssl toolkit (0 = the input to the first conformer layer, ``k``
the output of layer ``k``), ``--pool none|mean|last`` (frames, or the mean / last of the true
frames).

Batching: items are padded and the attention mask passed. The model honours it exactly: the
encoder zeroes padded frames before the first layer, attention drops padded keys, relative
position embeddings depend on offsets only, and the conformer convolution module zeroes padded
frames before its depthwise convolution, which is causal (left-padded) anyway, so a valid frame
never reads a later one. Measured with the random-init model of test/build_hf_models.py on the
sample recordings: batched equals alone within float rounding (test/test_w2v_bert.py).
Checkpoints with an adapter (``add_adapter``) change only ``last_hidden_state``, never the
hidden states written here.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from speechdump import hf_models
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, Extractor, Stream
from speechdump.extractors.ssl import LAYERS, POOL, POOLS, _to_numpy, parse_layers

MODEL_TYPES = ("wav2vec2-bert",)
FBANK_WINDOW, FBANK_SHIFT = 400, 160  # samples at 16 kHz (the feature extractor's Kaldi fbank)


@register("w2v_bert")
class W2vBertExtractor(Extractor):
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a Wav2Vec2BertModel and its feature extractor "
                  "(config.json, model weights, preprocessor_config.json), e.g. a copy of "
                  "facebook/w2v-bert-2.0, or a hub name")
    options = (
        LAYERS,
        POOL,
    )

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        shape = FRAMES if options["pool"] == "none" else VECTOR
        source, local = hf_models.resolve(model, cls.name)
        if not local:
            return [Stream(shape=shape)]
        config = hf_models.read_config(source, cls.name, MODEL_TYPES)
        layers = parse_layers(options["layers"], int(config.get("num_hidden_layers", 0)))
        return [Stream(f"layer{n}", shape=shape, dim=config.get("hidden_size")) for n in layers]

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none"):
        if model is None:
            raise ModelError(f"w2v_bert needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        source, local = hf_models.resolve(model, self.name)
        self.feature_extractor = hf_models.load_feature_extractor(
            source, local, self.name, "SeamlessM4TFeatureExtractor")
        fe = self.feature_extractor
        self.model = hf_models.load_checked("AutoModel", source, local, MODEL_TYPES)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(fe.sampling_rate)
        self.stride = int(fe.stride)
        self.min_seconds = (FBANK_WINDOW + (self.stride - 1) * FBANK_SHIFT) / self.sample_rate

        config = self.model.config
        self.num_layers = int(config.num_hidden_layers)
        self.layers = parse_layers(layers, self.num_layers)
        self.pool = pool
        # As in the ssl toolkit: layers past the highest requested one but one are never run.
        keep = min(self.layers[-1] + 1, self.num_layers)
        encoder = self.model.encoder
        encoder.layers = torch.nn.ModuleList(list(encoder.layers)[:keep])
        self.model.adapter = None  # only changes last_hidden_state, never read here
        self.model.intermediate_ffn = None
        shape = FRAMES if pool == "none" else VECTOR
        shift = self.stride * FBANK_SHIFT / self.sample_rate if pool == "none" else None
        self.streams = tuple(Stream(f"layer{n}", shape=shape, frame_shift=shift,
                                    dim=int(config.hidden_size)) for n in self.layers)

    def num_frames(self, samples: int) -> int:
        """The formula of the module docstring (fbank frames, in pairs)."""
        if samples < FBANK_WINDOW:
            return 0
        return (1 + (samples - FBANK_WINDOW) // FBANK_SHIFT) // self.stride

    def prepare(self, wave: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self.num_frames(len(wave)) < 1:
            raise ValueError(f"{len(wave)} samples: w2v_bert needs at least "
                             f"{self.min_seconds} s for one frame")
        inputs = self.feature_extractor(wave, sampling_rate=self.sample_rate,
                                        return_tensors="np", return_attention_mask=True)
        return (np.asarray(inputs["input_features"][0], dtype=np.float32),
                np.asarray(inputs["attention_mask"][0], dtype=np.int64))

    def cost(self, prepared) -> float:
        return len(prepared[0]) * self.stride * FBANK_SHIFT / self.sample_rate

    def forward(self, batch: List[Tuple[np.ndarray, np.ndarray]]):
        longest = max(len(features) for features, _ in batch)
        dim = batch[0][0].shape[1]
        features = np.full((len(batch), longest, dim), self.feature_extractor.padding_value,
                           dtype=np.float32)
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        for i, (f, m) in enumerate(batch):
            features[i, :len(f)], mask[i, :len(m)] = f, m
        with torch.inference_mode():
            hidden = self.model(torch.from_numpy(features).to(self.device),
                                attention_mask=torch.from_numpy(mask).to(self.device),
                                output_hidden_states=True).hidden_states
            outputs = []
            for i, (_, m) in enumerate(batch):
                valid = int(m.sum())
                outputs.append({f"layer{n}": self._pooled(hidden[n][i, :valid])
                                for n in self.layers})
            return _to_numpy(outputs)

    def _pooled(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool == "none":
            return h
        return h[-1] if self.pool == "last" else h.mean(dim=0)
