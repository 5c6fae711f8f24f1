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

(The window arithmetic is ``speechdump.windows``, shared with ssl and w2v_bert.)

Options: ``--layers`` as the ssl toolkit (0 = the input to the first encoder layer, ``k`` the
output of layer ``k``; the last, as transformers numbers it, is after the encoder's final layer
norm, i.e. ``last_hidden_state``); ``--pool none|mean|last`` (frames, or the mean / last of the
utterance's stitched frames: one vector per utterance whatever its length); ``--hop_seconds``
(default 20 for the 30 s windows above).

Causal windows (``--causal true --window_seconds W --hop_seconds H --pool last|mean``, W at most
30, H defaults to W): one vector per time stamp t = H, 2H, ... up to the audio's end, plus one
stamp at the audio's end when the last hop is partial, from the audio in [max(0, t - W), t]
only. Each window gets Whisper's own condition as an utterance of up to 30 s (its log-mel,
zero-padded to 30 s; its output trimmed to its true frame count) and is pooled (last true
frame, or their mean); a ``times`` stream holds each window's (start, end) in seconds (the
first windows are shorter than W). Every window costs a full 30 s encoder pass, whatever W.
The log-mel of each window is computed when its pass runs (``WINDOWS_PER_PASS`` at a time),
never for all windows at once. ``--window_seconds`` without ``--causal true`` is refused: long
audio always gets the 30 s windows above.

Batching: every window has the same shape ([80, 3000] log-mel), so a batch is a stack of
windows and nothing is padded or masked: batched equals alone up to float rounding (max abs
difference on the sample recordings: see test/test_whisper.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from speechdump import hf_models, windows
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, Extractor, Option, Stream, positive
from speechdump.extractors.ssl import (LAYERS, POOL, POOLS, arrays_of, forward_windows,
                                       keep_layers, layer_streams, parse_layers)
from speechdump.lazy import torch
from speechdump.windows import stitch_bounds, window_starts

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


@register("whisper")
class WhisperExtractor(Extractor):
    concurrent_forward = True
    # base size: passes took 0.97 and 1.02 of intra_op's time in two runs (bench/cpu_layout.py),
    # a tie; passes keep the outputs independent of the core count
    cpu_layout = "passes"
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a Whisper model and its feature extractor "
                  "(config.json, model weights, preprocessor_config.json), e.g. a copy of "
                  "openai/whisper-small, or a hub name")
    options = (
        LAYERS,
        POOL,
        Option("hop_seconds", float, None, "above 30 s: a 30 s window starts every this many "
               "seconds (at most 30; default 20); overlapping frames come from the window where "
               "they are farthest from an edge. With --causal true: a time stamp every this "
               "many seconds (default: window_seconds)", check=positive),
        Option("window_seconds", float, None, "with --causal true only: each time stamp's "
               "context in seconds (at most 30)", check=positive),
        windows.CAUSAL_OPTION,
    )

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        causal = cls._check_windows(options)
        shape = FRAMES if options["pool"] == "none" or causal else VECTOR
        source, local = hf_models.resolve(model, cls.name)
        if not local:
            return [Stream(shape=shape)]
        config = hf_models.read_config(source, cls.name, MODEL_TYPES)
        layers = parse_layers(options["layers"], int(config.get("encoder_layers", 0)))
        return layer_streams(layers, shape, config.get("d_model"), timed=causal)

    @staticmethod
    def _check_windows(options) -> bool:
        """OptionError for window options that do not fit; whether windows are causal."""
        if options["window_seconds"] is not None and not options["causal"]:
            raise OptionError("--window_seconds: whisper takes it with --causal true only; long "
                              "audio always gets Whisper's own 30 s windows (every "
                              "--hop_seconds)")
        mode = windows.window_mode(options, hop_needs_window=False, max_window=30.0)
        hop = options["hop_seconds"]
        if mode is None and hop is not None and hop > 30:
            raise OptionError(f"--hop_seconds {hop}: at most 30 (windows of 30 s must overlap "
                              f"or touch)")
        return mode == windows.CAUSAL

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none", hop_seconds: Optional[float] = None,
                 window_seconds: Optional[float] = None, causal: bool = False):
        if model is None:
            raise ModelError(f"whisper needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        self.causal = self._check_windows({"window_seconds": window_seconds, "pool": pool,
                                           "hop_seconds": hop_seconds, "causal": causal})
        self.mode = windows.CAUSAL if self.causal else None
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
        self.min_seconds = 1 / self.sample_rate
        if self.causal:
            # Causal windows of at most 30 s; stamps every H, on the sample grid.
            if window_seconds > self.window / self.sample_rate:
                raise OptionError(f"--window_seconds {window_seconds}: at most "
                                  f"{self.window / self.sample_rate:g} s (Whisper's input)")
            self.causal_window = windows.seconds_to_samples(window_seconds, self.sample_rate)
            self.hop = windows.seconds_to_samples(
                window_seconds if hop_seconds is None else hop_seconds, self.sample_rate)
            windows.check_causal_hop(self.hop, 1, self.sample_rate)
        else:
            hop_seconds = 20.0 if hop_seconds is None else hop_seconds
            frames = round(hop_seconds * self.sample_rate / self.unit)
            if not 1 <= frames * self.unit <= self.window:
                raise OptionError(f"--hop_seconds {hop_seconds}: between "
                                  f"{self.unit / self.sample_rate} and "
                                  f"{self.window / self.sample_rate}")
            self.hop = frames * self.unit

        self.num_layers = len(self.encoder.layers)
        self.layers = parse_layers(layers, self.num_layers)
        self.pool = pool
        self.encoder.layers = keep_layers(self.encoder.layers, self.layers[-1])
        shape = FRAMES if pool == "none" or self.causal else VECTOR
        shift = (self.hop if self.causal else self.unit) / self.sample_rate \
            if shape == FRAMES else None
        self.streams = tuple(layer_streams(self.layers, shape, int(self.encoder.config.d_model),
                                           shift, self.causal))

    def num_frames(self, samples: int) -> int:
        """True output frames of ``samples``: mel frames starting inside the audio, through the
        model's own conv length formula."""
        mel = -(-samples // int(self.feature_extractor.hop_length))
        lengths = self.encoder._get_feat_extract_output_lengths(torch.tensor(mel))
        return int(lengths)

    def prepare(self, wave: np.ndarray):
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self.causal:  # log-mel when each window's pass runs (module docstring)
            return windows.causal(wave, self.causal_window, self.hop)
        starts = window_starts(len(wave), self.window, self.hop, self.unit)
        pieces = [wave[s:s + self.window] for s in starts]
        # One call per window: exactly what the window gets alone (the log-mel's floor is
        # relative to each input's maximum).
        features = np.concatenate([self.feature_extractor(
            p, sampling_rate=self.sample_rate, return_tensors="np")["input_features"]
            for p in pieces])
        return _Item(features.astype(np.float32), [s // self.unit for s in starts],
                     [self.num_frames(len(p)) for p in pieces], self.num_frames(len(wave)))

    def cost(self, prepared) -> float:
        return len(prepared.starts) * self.window / self.sample_rate  # 30 s each, padded

    def batch_cost(self, costs) -> float:
        return float(sum(costs))  # every window has the same shape: nothing is padded

    def _encode(self, features: np.ndarray) -> List[Dict[int, torch.Tensor]]:
        """[windows, mel, frames] -> per window {layer: [1500, dim]}, a few windows per pass."""
        out = []
        for first in range(0, len(features), WINDOWS_PER_PASS):
            chunk = torch.from_numpy(features[first:first + WINDOWS_PER_PASS]).to(self.device)
            hidden = self.encoder(chunk, output_hidden_states=True).hidden_states
            out.extend({n: hidden[n][i] for n in self.layers} for i in range(len(chunk)))
        return out

    def _encode_waves(self, waves: List[np.ndarray]) -> List[Dict[int, torch.Tensor]]:
        """Windows of at most 30 s, each with its own log-mel -> per window {layer: [true
        frames, dim]}."""
        # The log-mel in float32 whatever --precision: autocast is for the model, and the
        # feature extractor computes with torch where it can.
        with torch.autocast(self.device.type, enabled=False):
            features = np.concatenate([self.feature_extractor(
                w, sampling_rate=self.sample_rate, return_tensors="np")["input_features"]
                for w in waves]).astype(np.float32)
        return [{n: h[:self.num_frames(len(w))] for n, h in states.items()}
                for w, states in zip(waves, self._encode(features))]

    def forward(self, batch: List) -> List[Dict[str, np.ndarray]]:
        with torch.inference_mode():
            if self.causal:
                # Every window is padded to 30 s: the pass is bounded by its window count.
                return forward_windows(self, batch, self._encode_waves,
                                       max_seconds=float("inf"), max_items=WINDOWS_PER_PASS)
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
            return arrays_of(outputs)

    def _pooled(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool == "none":
            return h
        return h[-1] if self.pool == "last" else h.mean(dim=0)
