"""Hidden states of Whisper's encoder (``WhisperModel`` with ``WhisperFeatureExtractor``).

``--model`` is a local directory holding a Whisper model (``config.json``, the weights: a
``WhisperModel`` or ``WhisperForConditionalGeneration`` checkpoint, whose decoder and
``proj_out`` are loaded and dropped) and its ``preprocessor_config.json``; or a hub name.

Whisper's encoder takes exactly 30 s of log-mel (``n_samples`` of the feature extractor, 3000
mel frames), and was trained on nothing else, so every input gets Whisper's own condition:

* up to 30 s: the feature extractor's log-mel of the utterance zero-padded to 30 s (exactly
  ``WhisperFeatureExtractor(wave)``), through the encoder; the output is trimmed to the
  utterance's true frame count ``frames = ceil(ceil(samples / hop_length) / 2)``, i.e.
  ``ceil(samples / 320)`` at 16 kHz (20 ms per frame): the mel frames that start inside the
  audio (the feature extractor's own attention mask), halved by the stride-2 convolution as
  ``model._get_feat_extract_output_lengths`` counts them. (The frames past them see only the
  padding; the ones kept see it too, through attention, as Whisper always does.)
* above 30 s: 30 s windows starting every ``--hop_seconds`` (rounded to whole 20 ms frames;
  the last window starts at the first frame from which it reaches the end of the audio, so it
  is at most 20 ms short of 30 s), each one exactly as an utterance of its own (its log-mel, its
  padding). Stitching: where two consecutive windows overlap, the overlap's first half (rounded
  down) comes from the earlier window and the rest from the later one: each frame is taken
  from the window in which it is farthest from an edge, so it has at least half the overlap
  (``30 - hop`` s) of context on each side within its window. The result is one sequence of
  ``ceil(samples / 320)`` frames, as below 30 s.

Options: ``--layers`` as the ssl toolkit (0 = the input to the first encoder layer, ``k`` the
output of layer ``k``; the last, as transformers numbers it, is after the encoder's final layer
norm, i.e. ``last_hidden_state``); ``--pool none|mean|last`` (frames, or the mean / last of the
utterance's stitched frames: one vector per utterance whatever its length); ``--hop_seconds``.

Batching: every window has the same shape ([80, 3000] log-mel), so a batch is a stack of
windows and nothing is padded or masked: batched equals alone up to float rounding (max abs
difference on the sample recordings: see test/test_whisper.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from speechdump import hf_models
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, Extractor, Option, Stream, positive
from speechdump.extractors.ssl import LAYERS, POOL, POOLS, _to_numpy, parse_layers

MODEL_TYPES = ("whisper",)
# Windows per forward pass: bounds memory for long audio (all hidden states of a 30 s window
# of whisper-large are 33 x 1500 x 1280 floats, 250 MB).
WINDOWS_PER_PASS = 8


@dataclass
class _Item:
    """One utterance: the log-mel of each 30 s window and where its frames go."""

    features: np.ndarray  # [windows, mel bins, mel frames], float32
    starts: List[int]  # first output frame of each window, on the utterance's frame grid
    frames: List[int]  # true output frames of each window
    total: int  # true output frames of the utterance


def window_starts(samples: int, window: int, hop: int, unit: int) -> List[int]:
    """Start samples of the windows: every ``hop`` from 0, then one starting at the first
    multiple of ``unit`` from which a window reaches the end; [0] if one window holds it all."""
    if samples <= window:
        return [0]
    last = -(-(samples - window) // unit) * unit
    return list(range(0, last, hop)) + [last]


def stitch_bounds(starts: Sequence[int], frames: Sequence[int]) -> List[range]:
    """The frames (relative to each window) each window contributes: cuts in the middle of
    each overlap of consecutive windows, the first half (rounded down) to the earlier one."""
    cuts = [starts[0]]
    for k in range(len(starts) - 1):
        cuts.append((starts[k + 1] + starts[k] + frames[k]) // 2)
    cuts.append(starts[-1] + frames[-1])
    return [range(cuts[k] - starts[k], cuts[k + 1] - starts[k]) for k in range(len(starts))]


@register("whisper")
class WhisperExtractor(Extractor):
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a Whisper model and its feature extractor "
                  "(config.json, model weights, preprocessor_config.json), e.g. a copy of "
                  "openai/whisper-small, or a hub name")
    options = (
        LAYERS,
        POOL,
        Option("hop_seconds", float, 20.0, "above 30 s: a 30 s window starts every this many "
               "seconds (at most 30); overlapping frames come from the window where they are "
               "farthest from an edge", check=positive),
    )

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        if options["hop_seconds"] > 30:
            raise OptionError(f"--hop_seconds {options['hop_seconds']}: at most 30 (windows of "
                              f"30 s must overlap or touch)")
        shape = FRAMES if options["pool"] == "none" else VECTOR
        source, local = hf_models.resolve(model, cls.name)
        if not local:
            return [Stream(shape=shape)]
        config = hf_models.read_config(source, cls.name, MODEL_TYPES)
        layers = parse_layers(options["layers"], int(config.get("encoder_layers", 0)))
        return [Stream(f"layer{n}", shape=shape, dim=config.get("d_model")) for n in layers]

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none", hop_seconds: float = 20.0):
        if model is None:
            raise ModelError(f"whisper needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        source, local = hf_models.resolve(model, self.name)
        self.feature_extractor = hf_models.load_feature_extractor(
            source, local, self.name, "WhisperFeatureExtractor")
        fe = self.feature_extractor
        whole = hf_models.load_checked("AutoModel", source, local, MODEL_TYPES)
        self.encoder = whole.get_encoder()
        del whole  # the decoder is never used
        self.device = torch.device(device)
        self.encoder.to(self.device).eval()

        self.sample_rate = int(fe.sampling_rate)
        self.window = int(fe.n_samples)
        conv_stride = int(self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0])
        self.unit = int(fe.hop_length) * conv_stride  # samples per output frame
        if fe.nb_max_frames != self.encoder.max_source_positions * conv_stride:
            raise ModelError(f"whisper model '{model}': the feature extractor makes "
                             f"{fe.nb_max_frames} mel frames, the encoder takes "
                             f"{self.encoder.max_source_positions * conv_stride}")
        frames = round(hop_seconds * self.sample_rate / self.unit)
        if not 1 <= frames * self.unit <= self.window:
            raise OptionError(f"--hop_seconds {hop_seconds}: between {self.unit / self.sample_rate}"
                              f" and {self.window / self.sample_rate}")
        self.hop = frames * self.unit
        self.min_seconds = 1 / self.sample_rate

        self.num_layers = len(self.encoder.layers)
        self.layers = parse_layers(layers, self.num_layers)
        self.pool = pool
        # Layers after the highest requested one but one are never run (the one kept makes sure
        # the highest requested state is not the last, which transformers takes after the final
        # layer norm); hidden state num_layers, when asked for, keeps them all.
        keep = min(self.layers[-1] + 1, self.num_layers)
        self.encoder.layers = torch.nn.ModuleList(list(self.encoder.layers)[:keep])
        shape = FRAMES if pool == "none" else VECTOR
        shift = self.unit / self.sample_rate if pool == "none" else None
        self.streams = tuple(Stream(f"layer{n}", shape=shape, frame_shift=shift,
                                    dim=int(self.encoder.config.d_model)) for n in self.layers)

    def num_frames(self, samples: int) -> int:
        """True output frames of ``samples``: mel frames starting inside the audio, through the
        model's own conv length formula."""
        mel = -(-samples // int(self.feature_extractor.hop_length))
        lengths = self.encoder._get_feat_extract_output_lengths(torch.tensor(mel))
        return int(lengths)

    def prepare(self, wave: np.ndarray) -> _Item:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        starts = window_starts(len(wave), self.window, self.hop, self.unit)
        pieces = [wave[s:s + self.window] for s in starts]
        # One call per window: exactly what the window gets alone (the log-mel's floor is
        # relative to each input's maximum).
        features = np.concatenate([self.feature_extractor(
            p, sampling_rate=self.sample_rate, return_tensors="np")["input_features"]
            for p in pieces])
        return _Item(features.astype(np.float32), [s // self.unit for s in starts],
                     [self.num_frames(len(p)) for p in pieces], self.num_frames(len(wave)))

    def cost(self, prepared: _Item) -> float:
        return len(prepared.starts) * self.window / self.sample_rate

    def batch_cost(self, costs: Sequence[float]) -> float:
        return float(sum(costs))  # every window has the same shape: nothing is padded

    def _encode(self, features: np.ndarray) -> List[Dict[int, torch.Tensor]]:
        """[windows, mel, frames] -> per window {layer: [1500, dim]}, a few windows per pass."""
        out = []
        for first in range(0, len(features), WINDOWS_PER_PASS):
            chunk = torch.from_numpy(features[first:first + WINDOWS_PER_PASS]).to(self.device)
            hidden = self.encoder(chunk, output_hidden_states=True).hidden_states
            out.extend({n: hidden[n][i] for n in self.layers} for i in range(len(chunk)))
        return out

    def forward(self, batch: List[_Item]) -> List[Dict[str, np.ndarray]]:
        with torch.inference_mode():
            states = self._encode(np.concatenate([item.features for item in batch]))
            outputs, first = [], 0
            for item in batch:
                windows = states[first:first + len(item.starts)]
                first += len(item.starts)
                bounds = stitch_bounds(item.starts, item.frames)
                frames = {n: torch.cat([w[n][b.start:b.stop] for w, b in zip(windows, bounds)])
                          for n in self.layers}
                if any(len(h) != item.total for h in frames.values()):
                    raise RuntimeError(f"whisper: stitched {len(frames[self.layers[0]])} frames "
                                       f"where the utterance has {item.total}")
                outputs.append({f"layer{n}": self._pooled(h) for n, h in frames.items()})
            return _to_numpy(outputs)

    def _pooled(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool == "none":
            return h
        return h[-1] if self.pool == "last" else h.mean(dim=0)
