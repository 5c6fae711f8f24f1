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
frames), and windows as the ssl toolkit (``speechdump.windows``), each window's fbank computed
and normalised over the window alone: ``--window_seconds W --hop_seconds H`` with ``--pool
mean|last`` pools sliding windows (plus a ``times`` stream); with ``--pool none`` stitches them
into the utterance's frames (H rounded to whole 20 ms frames, at most a window's frame count;
each overlap split in half, the first half to the earlier window; utt2num_frames: the stitched
count, the formula above); ``--causal true --pool last|mean``: one vector per stamp t = H, 2H,
..., plus one at the audio's end after a final partial hop, from the audio in
[max(0, t - W), t] only (``times`` holds each window's start and end). The first causal window
holds H s, so H is at least 35 ms. Windows run in padded, length-sorted passes of at most
``ssl.WINDOW_BATCH_SECONDS`` of audio, exact as utterances' batches are.

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

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechdump import hf_models, windows
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, Extractor, Stream
from speechdump.extractors.ssl import (POOLS, WINDOWED_ENCODER_OPTIONS, arrays_of, forward_windows,
                                       keep_layers, layer_streams, parse_layers)
from speechdump.lazy import torch

MODEL_TYPES = ("wav2vec2-bert",)
FBANK_WINDOW, FBANK_SHIFT = 400, 160  # samples at 16 kHz (the feature extractor's Kaldi fbank)


@register("w2v_bert")
class W2vBertExtractor(Extractor):
    concurrent_forward = True
    # a transformers encoder as ssl's, which runs faster as passes
    cpu_layout = "passes"
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a Wav2Vec2BertModel and its feature extractor "
                  "(config.json, model weights, preprocessor_config.json), e.g. a copy of "
                  "facebook/w2v-bert-2.0, or a hub name")
    options = WINDOWED_ENCODER_OPTIONS

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        mode = windows.window_mode(options)
        shape = FRAMES if options["pool"] == "none" or mode is not None else VECTOR
        source, local = hf_models.resolve(model, cls.name)
        if not local:
            return [Stream(shape=shape)]
        config = hf_models.read_config(source, cls.name, MODEL_TYPES)
        layers = parse_layers(options["layers"], int(config.get("num_hidden_layers", 0)))
        return layer_streams(layers, shape, config.get("hidden_size"),
                             timed=mode in (windows.POOLED, windows.CAUSAL))

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none", window_seconds: Optional[float] = None,
                 hop_seconds: Optional[float] = None, causal: bool = False):
        if model is None:
            raise ModelError(f"w2v_bert needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        self.mode = windows.window_mode({"window_seconds": window_seconds, "pool": pool,
                                         "hop_seconds": hop_seconds, "causal": causal})
        source, local = hf_models.resolve(model, self.name)
        self.feature_extractor = hf_models.load_feature_extractor(
            source, local, self.name, "SeamlessM4TFeatureExtractor")
        fe = self.feature_extractor
        self.model = hf_models.load_checked("AutoModel", source, local, MODEL_TYPES)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(fe.sampling_rate)
        self.stride = int(fe.stride)
        min_samples = FBANK_WINDOW + (self.stride - 1) * FBANK_SHIFT
        self.min_seconds = min_samples / self.sample_rate
        self.unit = self.stride * FBANK_SHIFT  # samples per output frame
        self.window = self.hop = None
        if self.mode is not None:
            given_hop, hop_seconds = hop_seconds, window_seconds if hop_seconds is None \
                else hop_seconds
            self.window = windows.seconds_to_samples(window_seconds, self.sample_rate)
            self.hop = windows.seconds_to_samples(hop_seconds, self.sample_rate)
            if self.window < min_samples or self.hop < 1:
                raise OptionError(f"--window_seconds {window_seconds}: the model needs at least "
                                  f"{self.min_seconds} s per window")
            if self.mode == windows.STITCHED:
                self.hop = windows.stitch_hop(given_hop, self.sample_rate, self.unit,
                                              self.num_frames(self.window))
            elif self.mode == windows.CAUSAL:
                windows.check_causal_hop(self.hop, min_samples, self.sample_rate)

        config = self.model.config
        self.num_layers = int(config.num_hidden_layers)
        self.layers = parse_layers(layers, self.num_layers)
        self.pool = pool
        self.model.encoder.layers = keep_layers(self.model.encoder.layers, self.layers[-1])
        self.model.adapter = None  # only changes last_hidden_state, never read here
        self.model.intermediate_ffn = None
        timed = self.mode in (windows.POOLED, windows.CAUSAL)
        shape = FRAMES if pool == "none" or timed else VECTOR
        shift = (self.hop if timed else self.unit) / self.sample_rate if shape == FRAMES \
            else None
        self.streams = tuple(layer_streams(self.layers, shape, int(config.hidden_size), shift,
                                           timed))

    def num_frames(self, samples: int) -> int:
        """The formula of the module docstring (fbank frames, in pairs)."""
        if samples < FBANK_WINDOW:
            return 0
        return (1 + (samples - FBANK_WINDOW) // FBANK_SHIFT) // self.stride

    def prepare(self, wave: np.ndarray):
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self.num_frames(len(wave)) < 1:
            raise ValueError(f"{len(wave)} samples: w2v_bert needs at least "
                             f"{self.min_seconds} s for one frame")
        if self.mode == windows.CAUSAL:
            return windows.causal(wave, self.window, self.hop)
        if self.mode is not None:  # stitched windows start on the frame grid
            unit = self.unit if self.mode == windows.STITCHED else 1
            return windows.sliding(wave, self.window, self.hop, unit)
        return self._features(wave)

    def _features(self, wave: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The feature extractor's input of one waveform alone: (features, attention mask)."""
        inputs = self.feature_extractor(wave, sampling_rate=self.sample_rate,
                                        return_tensors="np", return_attention_mask=True)
        return (np.asarray(inputs["input_features"][0], dtype=np.float32),
                np.asarray(inputs["attention_mask"][0], dtype=np.int64))

    def cost(self, prepared) -> float:
        if isinstance(prepared, windows.Windows):
            return float(prepared.sizes().sum()) / self.sample_rate
        return len(prepared[0]) * self.unit / self.sample_rate

    def batch_cost(self, costs: Sequence[float]) -> float:
        if self.mode is not None:
            return float(sum(costs))  # each window runs as its own item (speechdump.windows)
        return max(costs) * len(costs)

    def _encode(self, batch: List[Tuple[np.ndarray, np.ndarray]]) -> List[Dict[int, torch.Tensor]]:
        """Prepared items -> per item {layer: [true frames, dim]}, one padded, masked pass."""
        longest = max(len(features) for features, _ in batch)
        dim = batch[0][0].shape[1]
        features = np.full((len(batch), longest, dim), self.feature_extractor.padding_value,
                           dtype=np.float32)
        mask = np.zeros((len(batch), longest), dtype=np.int64)
        for i, (f, m) in enumerate(batch):
            features[i, :len(f)], mask[i, :len(m)] = f, m
        hidden = self.model(torch.from_numpy(features).to(self.device),
                            attention_mask=torch.from_numpy(mask).to(self.device),
                            output_hidden_states=True).hidden_states
        return [{n: hidden[n][i, :int(m.sum())] for n in self.layers}
                for i, (_, m) in enumerate(batch)]

    def forward(self, batch: List):
        with torch.inference_mode():
            if self.mode is not None:
                return forward_windows(self, batch, lambda waves: self._encode(
                    [self._features(w) for w in waves]))
            return arrays_of([{f"layer{n}": self._pooled(h) for n, h in states.items()}
                              for states in self._encode(batch)])

    def _pooled(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool == "none":
            return h
        return h[-1] if self.pool == "last" else h.mean(dim=0)
