"""Hidden states of self-supervised speech encoders (HuBERT, wav2vec 2.0, WavLM, data2vec-audio).

``--model`` is a local directory holding a transformers model and its feature-extractor config
(``config.json``, the weights, ``preprocessor_config.json``), loaded with
``AutoModel.from_pretrained`` / ``AutoFeatureExtractor.from_pretrained`` (local files only); a
name that is not an existing path is passed through as a hub name (fetched because the user
named it). Weights are used in float32, and only if they fit the model
(``speechdump.hf_models.load_checked``).

Options:

* ``--layers``: ``all`` (the default), one number (``6``), or a list (``3,6,9``; ``a-b`` ranges
  too), numbered as ``output_hidden_states`` numbers them: 0 is the input to the first
  transformer layer, ``k`` the output of layer ``k``, up to ``num_hidden_layers``. (With
  transformers 5, the last hidden state of a stable-layer-norm ("large") model is taken before
  the encoder's final layer norm, i.e. it differs from ``last_hidden_state``; we keep the
  library's numbering.) Every requested layer comes from one forward pass, and the layers after
  the highest requested one but one are never run. Each layer is a stream ``layer<k>``.
* ``--pool none|mean|last``: ``none`` writes frames ([frames, dim] per utterance, trimmed to the
  utterance's true frame count, ``model._get_feat_extract_output_lengths(samples)``); ``mean``
  averages the true frames, ``last`` takes the last true frame: one vector per utterance.
* ``--window_seconds W [--hop_seconds H]`` (long audio; H defaults to W): windows of W s start
  every H s; when the last of them ends before the audio does, one more window, ending at the
  audio's end (starting at ``end - W``), covers the rest, so every window has exactly W s and
  all the audio is covered; audio no longer than W is one window (all of it). Each window is
  preprocessed and run as if it were an utterance of its own, and pooled to one vector (``last``
  takes its last frame; ``mean`` and ``none`` average its frames). Output per utterance:
  [num_windows, dim] per layer, plus a stream ``times`` of [num_windows, 2] (start, end in
  seconds); utt2num_frames holds the window counts. The windows of the utterances in a batch are
  run in forward passes of at most ``WINDOW_BATCH_SECONDS`` of audio each.

Preprocessing follows the saved feature-extractor config: the sample rate (the engine resamples
to it) and ``do_normalize`` (zero mean, unit variance), applied by the feature extractor itself
to each utterance (or window) alone, before any padding.

Batching keeps what an utterance gets alone. Measured with the random-init models of
test/build_ssl_model.py on 8 real recordings (1.5-11 s), max abs difference of any hidden state
between a zero-padded batch and each utterance alone (hidden states up to 4-10 in size):

=============================  ===============  ==================
config                         padded, no mask  padded, with mask
=============================  ===============  ==================
HuBERT / wav2vec2 / WavLM,     3.7 - 4.2        3.7 - 3.9
group norm (base models)
HuBERT / wav2vec2 / WavLM,     4.5 - 5.1        4.8e-6 - 7.2e-6
layer norm (large models)
data2vec-audio                 5.6              5.3
=============================  ===============  ==================

So transformers honours the attention mask exactly (to float rounding) only for the layer-norm
models of HuBERT, wav2vec2 and WavLM (WavLM's relative position bias depends on offsets only,
and its key-padding mask removes the padded keys). Two things break it elsewhere, and both are
fixed here, so every one of these models batches padded utterances exactly:

* group norm: the first convolution's GroupNorm (one group per channel) normalises each
  channel over the whole, padded, time axis. Here the convolutions up to the last GroupNorm
  run on each item alone (its own samples only: the same tensors, and the same operations, as
  alone), the result is zero-padded, and the remaining convolutions run on the batch: each
  valid frame only reads valid frames of the layer below (the frame-count formula guarantees
  it), so valid frames are what the item gets alone. The attention mask then does the rest.
* data2vec-audio's positional embedding is a stack of 5 convolutions: the first fills the
  padded frames with non-zero values, which the next ones read next to each item's end, where
  an utterance alone sees zero padding. Here a forward hook zeroes each item's padded frames
  after every convolution of that stack.

After these fixes, the batched engine matches each utterance alone within 1e-5 (see
test/test_ssl.py). Other architectures (not the four above, or with an adapter) are not assumed
to honour the mask: they get batches of identical lengths only (``equal_lengths_only``). On CPU
batching does not pay (bench/ssl_feats.py), so there utterances go one per forward pass by default
(``max_batch_size = 1``); the exact padded batches are for GPUs.

Shortest input (``min_seconds``): one output frame needs the convolutions' receptive field,
``1 + sum((kernel_i - 1) * prod(strides before i))`` samples: 400 samples (0.025 s at 16 kHz)
for all four architectures. Anything shorter has no frame at all and is refused; from 400
samples on the model runs and every output is defined. (The limit is the model's, not a
judgement of usefulness: a 25 ms input gives one frame.)
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from speechdump import compat
from speechdump.batching import pad, plan_batches
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, Extractor, Option, Stream, positive
from speechdump.hf_models import load_checked, read_config, resolve

# Architectures whose padded batches are made exactly equal to single utterances (see above).
MASKABLE_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
POOLS = ("none", "mean", "last")
# The options of every encoder family that gives hidden states (ssl, whisper, w2v_bert).
LAYERS = Option("layers", str, "all", "hidden states: all, 6, 3,6,9 or 3-6 (0 = the input of the "
                "first layer)")
POOL = Option("pool", str, "none", "none: frames; mean or last: one vector per utterance (or "
              "per window)", choices=POOLS)
# Audio seconds (padded) per forward pass in window mode.
WINDOW_BATCH_SECONDS = 60.0
def parse_layers(spec: str, num_layers: int) -> List[int]:
    """``all`` | ``6`` | ``3,6,9`` | ``3-6`` -> sorted distinct hidden-state numbers, checked."""
    text = str(spec).strip().lower()
    if text == "all":
        return list(range(num_layers + 1))
    layers = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise OptionError(f"--layers '{spec}': expected 'all' or hidden-state numbers such as "
                              f"'6', '3,6,9' or '3-6'")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise OptionError(f"--layers '{spec}': empty range {part}")
        layers.update(range(first, last + 1))
    bad = sorted(n for n in layers if n > num_layers)
    if bad:
        raise OptionError(
            f"--layers '{spec}': no hidden state {', '.join(map(str, bad))}; this model has "
            f"{num_layers} transformer layers, so hidden states 0..{num_layers} (0 = the input "
            f"to the first layer, {num_layers} = the output of the last)")
    return sorted(layers)


@dataclass
class _Windows:
    """One utterance in window mode: its raw waveform and where its windows start."""

    wave: np.ndarray
    starts: np.ndarray  # samples
    size: int  # samples per window (all equal)


@register("ssl")
class SSLExtractor(Extractor):
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a transformers speech encoder and its feature "
                  "extractor (config.json, model weights, preprocessor_config.json), e.g. a copy "
                  "of facebook/hubert-base-ls960, or a hub name")
    options = (
        LAYERS,
        POOL,
        Option("window_seconds", float, None, "sliding windows of this many seconds, each "
               "pooled to one vector", check=positive),
        Option("hop_seconds", float, None, "a window starts every this many seconds (default: "
               "window_seconds)", check=positive),
    )

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        if options["hop_seconds"] is not None and options["window_seconds"] is None:
            raise OptionError("--hop_seconds needs --window_seconds")
        if not resolve(model, "ssl")[1]:
            return [Stream(shape=FRAMES)]  # a hub name: its layers are known once fetched
        config = read_config(model, "ssl")
        if "conv_kernel" not in config or "num_hidden_layers" not in config:
            raise ModelError(f"ssl model '{model}' ({config.get('model_type')}) is not a waveform "
                             f"encoder with a convolutional front end (its config.json)")
        layers = parse_layers(options["layers"], int(config["num_hidden_layers"]))
        windows = options["window_seconds"] is not None
        shape = FRAMES if options["pool"] == "none" or windows else VECTOR
        streams = [Stream(f"layer{n}", shape=shape, dim=config.get("hidden_size"))
                   for n in layers]
        return streams + ([Stream("times", shape=FRAMES, dim=2, exact=True)] if windows else [])

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none", window_seconds: Optional[float] = None,
                 hop_seconds: Optional[float] = None):
        if model is None:
            raise ModelError(f"ssl needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        from transformers import AutoFeatureExtractor

        source, local = resolve(model, "ssl")
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(
                source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ModelError(f"ssl model '{model}': no usable feature-extractor config "
                             f"(preprocessor_config.json): {exc}") from exc
        fe = self.feature_extractor
        if getattr(fe, "feature_size", None) != 1 or not hasattr(fe, "sampling_rate"):
            raise ModelError(f"ssl model '{model}': {type(fe).__name__} does not take raw "
                             f"waveforms; expected a Wav2Vec2FeatureExtractor-style config")
        self.model = load_checked("AutoModel", source, local)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        if self.device.type == "cpu":
            # On CPU a padded batch costs more than its utterances one by one (forward passes
            # of base-size HuBERT over the 26 samples on 2 cores: 10.3 s one at a time, 10.8 s
            # in batches of <= 20 s, 11.4 s of <= 60 s; the whole engine: bench/ssl_feats.py), so
            # utterances go alone; loaders still run ahead, and in window mode the windows of
            # an utterance are still batched (they need no padding).
            self.max_batch_size = 1
        config = self.model.config
        self.sample_rate = int(fe.sampling_rate)

        self.num_layers = int(config.num_hidden_layers)
        self.layers = parse_layers(layers, self.num_layers)
        self.pool = pool
        hop = None  # seconds between frames (or windows), from the model's strides

        if not hasattr(config, "conv_kernel") or not hasattr(config, "conv_stride"):
            raise ModelError(f"ssl model '{model}' ({config.model_type}) is not a waveform encoder "
                             f"with a convolutional front end (no conv_kernel in its config)")
        kernels, strides = list(config.conv_kernel), list(config.conv_stride)
        self.receptive_field = 1 + sum((k - 1) * math.prod(strides[:i])
                                       for i, k in enumerate(kernels))
        self.min_seconds = self.receptive_field / self.sample_rate

        self.window = self.hop = None
        if window_seconds is None and hop_seconds is not None:
            raise OptionError("--hop_seconds needs --window_seconds")
        if window_seconds is not None:
            hop_seconds = window_seconds if hop_seconds is None else hop_seconds
            if not window_seconds > 0 or not hop_seconds > 0:
                raise OptionError("--window_seconds and --hop_seconds must be positive")
            self.window = int(round(window_seconds * self.sample_rate))
            self.hop = int(round(hop_seconds * self.sample_rate))
            if self.window < self.receptive_field or self.hop < 1:
                raise OptionError(f"--window_seconds {window_seconds}: the model needs at least "
                                  f"{self.min_seconds} s per window")
        frame_level = pool == "none" or self.window is not None
        if self.window is not None:
            hop = self.hop / self.sample_rate
        elif frame_level:
            hop = math.prod(strides) / self.sample_rate
        self.streams = tuple(Stream(f"layer{n}", shape=FRAMES if frame_level else VECTOR,
                                    frame_shift=hop, dim=int(config.hidden_size))
                             for n in self.layers)
        if self.window is not None:
            # Seconds: float16 would round 2.8795 to 2.88.
            self.streams += (Stream("times", shape=FRAMES, frame_shift=hop, dim=2, exact=True),)

        # Exact padded batches for the known architectures (module docstring); others get
        # batches of identical lengths only. Window mode groups windows by length itself.
        encoder = getattr(self.model, "encoder", None)
        self.maskable = (config.model_type in MASKABLE_TYPES
                         and not getattr(config, "add_adapter", False)
                         and hasattr(self.model, "_get_feat_extract_output_lengths")
                         and hasattr(encoder, "layers"))
        self.equal_lengths_only = not self.maskable and self.window is None
        self._lengths: Optional[torch.Tensor] = None  # samples per item of a padded batch
        self._frames: Optional[torch.Tensor] = None  # frames per item of a padded batch
        self._patches: List[compat.Probe] = []  # verified on the first padded batch
        if self.maskable:
            # Patches of transformers internals (speechdump.compat; module docstring).
            self._patches = [
                compat.patch_group_norm(self.model, lambda: self._lengths),
                compat.hook_positional_convolutions(
                    self.model, lambda: self._frames,
                    required=config.model_type == "data2vec-audio")]
            # Layers after the highest requested one are not needed; one more is kept, so the
            # highest requested hidden state is never the last one (which transformers may
            # replace by, or take after, the encoder's final layer norm).
            keep = min(self.layers[-1] + 1, self.num_layers)
            if keep < len(encoder.layers):
                encoder.layers = torch.nn.ModuleList(list(encoder.layers)[:keep])
        if config.model_type == "wavlm":
            # WavLM hands torch a boolean key-padding mask with its float position bias; torch
            # warns that mixing the two types is deprecated and converts the mask itself, so the
            # output is unchanged (batched == each utterance alone: test_ssl.py, WavLM cases).
            # Only this message is silenced, once per job, not every UserWarning.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask",
                                    category=UserWarning)

    # -- engine interface -----------------------------------------------------------------

    def _normalise(self, waves: List[np.ndarray]) -> List[np.ndarray]:
        """What the feature extractor makes of each waveform alone (no padding)."""
        values = self.feature_extractor(list(waves), sampling_rate=self.sample_rate,
                                        padding=False)["input_values"]
        return [np.asarray(v, dtype=np.float32) for v in values]

    def prepare(self, wave: np.ndarray):
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self.window is None:
            return self._normalise([wave])[0]
        n = len(wave)
        if n <= self.window:
            return _Windows(wave, np.zeros(1, dtype=np.int64), n)
        starts = list(range(0, n - self.window + 1, self.hop))
        if starts[-1] + self.window < n:
            starts.append(n - self.window)  # the last window ends where the audio ends
        return _Windows(wave, np.asarray(starts, dtype=np.int64), self.window)

    def cost(self, prepared) -> float:
        if isinstance(prepared, _Windows):
            return len(prepared.starts) * prepared.size / self.sample_rate
        return len(prepared) / self.sample_rate

    def batch_cost(self, costs: Sequence[float]) -> float:
        if self.window is not None:
            return float(sum(costs))  # windows are grouped by length: nothing is padded
        return max(costs) * len(costs)

    def num_frames(self, num_samples) -> torch.Tensor:
        """The model's own frame count for inputs of ``num_samples``."""
        lengths = torch.as_tensor(num_samples, dtype=torch.long)
        return self.model._get_feat_extract_output_lengths(lengths).to(torch.long)

    def _encode(self, inputs: List[np.ndarray]) -> List[Dict[int, torch.Tensor]]:
        """Preprocessed inputs -> per item {layer: [true frames, dim]} from one forward pass."""
        lengths = torch.tensor([len(x) for x in inputs], dtype=torch.long)
        padded = bool(lengths.min() != lengths.max())
        if padded and not self.maskable:
            raise RuntimeError("ssl: a padded batch for a model that cannot be told lengths")
        batch, _ = pad(inputs, self.device)
        kwargs = {}
        if padded:
            steps = torch.arange(batch.shape[1], device=self.device)
            kwargs["attention_mask"] = (steps[None, :] < lengths.to(self.device)[:, None]).long()
            self._lengths = lengths
            self._frames = self.num_frames(lengths).to(self.device)
        try:
            hidden = self.model(batch, output_hidden_states=True, **kwargs).hidden_states
        finally:
            self._lengths = self._frames = None
        if padded:
            for probe in self._patches:
                probe.verify()
        total = hidden[0].shape[1]
        if hasattr(self.model, "_get_feat_extract_output_lengths"):
            frames = self.num_frames(lengths).tolist()
            if max(frames) != total:
                raise RuntimeError(f"ssl: the model gave {total} frames where its length formula "
                                   f"says {max(frames)}")
        else:  # equal lengths only: every item has all the frames
            frames = [total] * len(inputs)
        return [{n: hidden[n][i, :frames[i]] for n in self.layers} for i in range(len(inputs))]

    def _pooled(self, h: torch.Tensor) -> torch.Tensor:
        return h[-1] if self.pool == "last" else h.mean(dim=0)

    def forward(self, batch: List) -> List[Dict[str, np.ndarray]]:
        with torch.inference_mode():
            if self.window is not None:
                return self._forward_windows(batch)
            return _to_numpy([{f"layer{n}": h if self.pool == "none" else self._pooled(h)
                               for n, h in states.items()} for states in self._encode(batch)])

    def _forward_windows(self, batch: List[_Windows]) -> List[Dict[str, np.ndarray]]:
        pieces = [(i, k) for i, item in enumerate(batch) for k in range(len(item.starts))]
        pooled = [[None] * len(item.starts) for item in batch]
        costs = [batch[i].size / self.sample_rate for i, _ in pieces]
        for indices in plan_batches(costs, WINDOW_BATCH_SECONDS, len(pieces),
                                    equal_only=not self.maskable):
            waves = []
            for j in indices:
                i, k = pieces[j]
                start = int(batch[i].starts[k])
                waves.append(batch[i].wave[start:start + batch[i].size])
            for j, states in zip(indices, self._encode(self._normalise(waves))):
                i, k = pieces[j]
                pooled[i][k] = {n: self._pooled(h) for n, h in states.items()}
        outputs = _to_numpy([{f"layer{n}": torch.stack([w[n] for w in windows])
                              for n in self.layers} for windows in pooled])
        for item, out in zip(batch, outputs):
            starts = item.starts.astype(np.float64)
            times = np.stack([starts, starts + item.size], axis=1) / self.sample_rate
            out["times"] = times.astype(np.float32)
        return outputs


def _to_numpy(items: List[Dict[str, torch.Tensor]]) -> List[Dict[str, np.ndarray]]:
    """Each item's tensors as float32 arrays, one copy to the host per item.

    On a GPU, copying each tensor alone costs a transfer and a synchronisation per item and
    layer (13 x the batch size for all layers of a base model); here an item's layers are
    packed on the device and cross together: 1.35-1.61x the engine's speed (bench/RESULTS.md).
    One copy per batch measured slower than one per tensor (probably because a buffer of tens
    of MB is fresh memory every time, paid for in page faults). The arrays are views of a
    buffer per item holding exactly its outputs (never the padded batch or the layers not
    asked for)."""
    outputs = []
    for item in items:
        flat = [t.detach().reshape(-1) for t in item.values()]
        host = torch.cat(flat).float().cpu().numpy()  # cat copies: nothing shares the model's
        ends = np.cumsum([t.numel() for t in flat])
        outputs.append({name: host[end - t.numel():end].reshape(t.shape)
                        for (name, t), end in zip(item.items(), ends)})
    return outputs
