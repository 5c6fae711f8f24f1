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
* ``--window_seconds W [--hop_seconds H]`` (long audio; H defaults to W; the arithmetic of all
  three window kinds is ``speechdump.windows``). Each window is preprocessed and run as if it
  were an utterance of its own; the windows of the utterances in a batch run in length-sorted
  forward passes of at most ``WINDOW_BATCH_SECONDS`` of audio each (exact padded batches as
  for utterances; equal lengths only for other architectures), so memory holds a pass, not all
  windows.

  - ``--pool mean|last``: sliding windows of W s every H s; when the last of them ends before
    the audio does, one more window, ending at the audio's end (starting at ``end - W``),
    covers the rest, so every window has exactly W s; audio no longer than W is one window.
    Each window is pooled to one vector (mean of its frames, or its last frame). Output:
    [num_windows, dim] per layer, plus a stream ``times`` of [num_windows, 2] (start, end in
    seconds); utt2num_frames holds the window counts.
  - ``--pool none``: frames of the whole utterance, stitched from windows. H is rounded to
    whole 20 ms frames (the convolutions' total stride, 320 samples) and must not exceed a
    window's frame count (windows overlap or touch; unset, it is that count: they touch); the
    last window starts on the frame grid at the first frame from which it reaches the end.
    Where consecutive windows overlap, the
    overlap's first half (rounded down) comes from the earlier window, the rest from the later
    one (each frame from the window in which it is farthest from an edge, as whisper does).
    Output: [frames, dim] per layer with the whole utterance's frame count
    (``_get_feat_extract_output_lengths``); no ``times`` stream; utt2num_frames holds the
    stitched frame count. Audio no longer than W is one window: exactly the plain forward.
    Measured: see "Stitched against whole" below.
  - ``--causal true --pool last|mean``: one vector per time stamp t = H, 2H, ... up to the
    audio's end, plus one stamp at the audio's end when it is not a multiple of H (the final
    partial hop), from the audio in [max(0, t - W), t] only: never a later sample. The first
    windows (t < W) are shorter than W; the ``times`` stream ([num_windows, 2], start and end
    in seconds) shows it. The first window holds H s, so H must give the model one frame.
    ``--pool none`` is refused with ``--causal true`` (pre-flight).

Stitched against whole (bench/windows.py ``--part stitch``): 60 s of real speech (the sample
recordings concatenated), the small random-init HuBERTs of test/build_ssl_model.py, every hidden
state (mean abs value 0.7-2.2), W = 20 s, H = 15 s (4 windows), stitched frames against one
whole-utterance forward:

=========================  =========================  =========================
HuBERT                     layer 0 max / mean abs     layers 1-4 max / mean abs
=========================  =========================  =========================
group norm (base layout)   2.3 / 0.14                 1.2 - 2.4 / 0.075 - 0.13
layer norm (large layout)  0.55 / 0.0042              0.77 - 1.2 / 0.044 - 0.12
=========================  =========================  =========================

The difference is the windows' own context, not an error (a window equals the model on its
samples alone, test/test_windows.py): each window is normalised alone (``do_normalize``), the
base layout's GroupNorm normalises each channel over the window rather than over 60 s (so it
shows from layer 0 on), attention sees 20 s instead of 60, and the positional convolution sees
the window's edges. (Random-init weights with perturbed norms; trained models not measured.)

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
from typing import Dict, List, Optional, Sequence

import numpy as np

from speechdump import compat, windows
from speechdump.batching import pad
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FRAMES, VECTOR, BatchState, Extractor, Option, Stream
from speechdump.hf_models import load_checked, read_config, resolve
from speechdump.lazy import torch

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


# The options of an encoder whose hidden states may be taken in windows (ssl, w2v_bert).
WINDOWED_ENCODER_OPTIONS = (LAYERS, POOL, windows.WINDOW_SECONDS, windows.HOP_SECONDS,
                            windows.CAUSAL_OPTION)


def layer_streams(layers: Sequence[int], shape: str, dim: Optional[int],
                  frame_shift: Optional[float] = None, timed: bool = False) -> List[Stream]:
    """A stream per hidden state (``layer<k>``) and, for windows pooled or causal (``timed``),
    the ``times`` stream of their (start, end) in seconds, stored exactly: float16 would round
    2.8795 to 2.88. Shared by ssl, whisper and w2v_bert, in their pre-flight and once loaded."""
    streams = [Stream(f"layer{n}", shape=shape, frame_shift=frame_shift, dim=dim)
               for n in layers]
    if timed:
        streams.append(Stream("times", shape=FRAMES, frame_shift=frame_shift, dim=2, exact=True))
    return streams


def keep_layers(layers: "torch.nn.ModuleList", highest: int) -> "torch.nn.ModuleList":
    """The encoder layers hidden state ``highest`` needs, and one more: the one kept makes sure
    the highest requested state is never the last, which transformers may take after (or
    replace by) the encoder's final layer norm; hidden state ``len(layers)`` keeps them all."""
    keep = min(highest + 1, len(layers))
    return layers if keep == len(layers) else torch.nn.ModuleList(list(layers)[:keep])


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


@register("ssl")
class SSLExtractor(Extractor):
    concurrent_forward = True
    # HuBERT base: 0.87-0.88 of intra_op's time (bench/cpu_layout.py)
    cpu_layout = "passes"
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a transformers speech encoder and its feature "
                  "extractor (config.json, model weights, preprocessor_config.json), e.g. a copy "
                  "of facebook/hubert-base-ls960, or a hub name")
    options = WINDOWED_ENCODER_OPTIONS

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        mode = windows.window_mode(options)
        if not resolve(model, "ssl")[1]:
            return [Stream(shape=FRAMES)]  # a hub name: its layers are known once fetched
        config = read_config(model, "ssl")
        if "conv_kernel" not in config or "num_hidden_layers" not in config:
            raise ModelError(f"ssl model '{model}' ({config.get('model_type')}) is not a waveform "
                             f"encoder with a convolutional front end (its config.json)")
        layers = parse_layers(options["layers"], int(config["num_hidden_layers"]))
        shape = FRAMES if options["pool"] == "none" or mode is not None else VECTOR
        return layer_streams(layers, shape, config.get("hidden_size"),
                             timed=mode in (windows.POOLED, windows.CAUSAL))

    def __init__(self, model: Optional[str] = None, device: str = "cpu", layers: str = "all",
                 pool: str = "none", window_seconds: Optional[float] = None,
                 hop_seconds: Optional[float] = None, causal: bool = False):
        if model is None:
            raise ModelError(f"ssl needs --model: {self.model_help}")
        if pool not in POOLS:
            raise OptionError(f"--pool '{pool}': choose from {', '.join(POOLS)}")
        self.mode = windows.window_mode({"window_seconds": window_seconds, "pool": pool,
                                         "hop_seconds": hop_seconds, "causal": causal})
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

        self.unit = math.prod(strides)  # samples per output frame
        self.window = self.hop = None
        if window_seconds is not None:
            given_hop, hop_seconds = hop_seconds, window_seconds if hop_seconds is None \
                else hop_seconds
            if not window_seconds > 0 or not hop_seconds > 0:
                raise OptionError("--window_seconds and --hop_seconds must be positive")
            self.window = windows.seconds_to_samples(window_seconds, self.sample_rate)
            self.hop = windows.seconds_to_samples(hop_seconds, self.sample_rate)
            if self.window < self.receptive_field or self.hop < 1:
                raise OptionError(f"--window_seconds {window_seconds}: the model needs at least "
                                  f"{self.min_seconds} s per window")
            if self.mode == windows.STITCHED:
                self.hop = windows.stitch_hop(given_hop, self.sample_rate, self.unit,
                                              int(self.num_frames(self.window)))
            elif self.mode == windows.CAUSAL:
                windows.check_causal_hop(self.hop, self.receptive_field, self.sample_rate)
        frame_level = pool == "none" or self.window is not None
        if self.mode in (windows.POOLED, windows.CAUSAL):
            hop = self.hop / self.sample_rate
        elif frame_level:
            hop = self.unit / self.sample_rate
        self.streams = tuple(layer_streams(self.layers, FRAMES if frame_level else VECTOR,
                                           int(config.hidden_size), hop,
                                           timed=self.mode in (windows.POOLED, windows.CAUSAL)))

        # Exact padded batches for the known architectures (module docstring); others get
        # batches of identical lengths only. Window mode groups windows by length itself.
        encoder = getattr(self.model, "encoder", None)
        self.maskable = (config.model_type in MASKABLE_TYPES
                         and not getattr(config, "add_adapter", False)
                         and hasattr(self.model, "_get_feat_extract_output_lengths")
                         and hasattr(encoder, "layers"))
        self.equal_lengths_only = not self.maskable and self.window is None
        self._batch = BatchState()  # samples and frames per item of a padded batch
        self._patches: List[compat.Probe] = []  # verified on the first padded batch
        if self.maskable:
            # Patches of transformers internals (speechdump.compat; module docstring).
            self._patches = [
                compat.patch_group_norm(self.model, lambda: self._batch.lengths),
                compat.hook_positional_convolutions(
                    self.model, lambda: self._batch.frames,
                    required=config.model_type == "data2vec-audio")]
            encoder.layers = keep_layers(encoder.layers, self.layers[-1])
        if config.model_type == "wavlm":
            compat.quiet_wavlm_mask_warning()

    # -- engine interface -----------------------------------------------------------------

    def _normalise(self, waves: List[np.ndarray]) -> List[np.ndarray]:
        """What the feature extractor makes of each waveform alone (no padding)."""
        values = self.feature_extractor(list(waves), sampling_rate=self.sample_rate,
                                        padding=False)["input_values"]
        return [np.asarray(v, dtype=np.float32) for v in values]

    def prepare(self, wave: np.ndarray):
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if self.mode is None:
            return self._normalise([wave])[0]
        if self.mode == windows.CAUSAL:
            return windows.causal(wave, self.window, self.hop)
        # Stitched windows start on the frame grid; pooled ones end exactly at the audio's end.
        unit = self.unit if self.mode == windows.STITCHED else 1
        return windows.sliding(wave, self.window, self.hop, unit)

    def cost(self, prepared) -> float:
        if isinstance(prepared, windows.Windows):
            return float(prepared.sizes().sum()) / self.sample_rate
        return len(prepared) / self.sample_rate

    def batch_cost(self, costs: Sequence[float]) -> float:
        if self.window is not None:
            return float(sum(costs))  # each window runs as its own item (speechdump.windows)
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
            self._batch.lengths = lengths
            self._batch.frames = self.num_frames(lengths).to(self.device)
        try:
            hidden = self.model(batch, output_hidden_states=True, **kwargs).hidden_states
        finally:
            self._batch.lengths = self._batch.frames = None
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
            if self.mode is not None:
                return forward_windows(self, batch, lambda waves: self._encode(
                    self._normalise(waves)), equal_only=not self.maskable)
            return arrays_of([{f"layer{n}": h if self.pool == "none" else self._pooled(h)
                               for n, h in states.items()} for states in self._encode(batch)])


def forward_windows(extractor, batch: List[windows.Windows], encode: windows.Encode,
                    **plan) -> List[Dict[str, np.ndarray]]:
    """The outputs of a batch of utterances in window mode (ssl, w2v_bert, whisper): stitched
    frames, or one vector per window plus its ``times``. ``extractor`` gives ``mode``,
    ``pool``, ``sample_rate``, and for stitching ``num_frames`` and ``unit``; ``plan`` goes to
    ``windows.encode_windows`` (default: ``WINDOW_BATCH_SECONDS`` per pass)."""
    plan.setdefault("max_seconds", WINDOW_BATCH_SECONDS)
    rate = extractor.sample_rate
    if extractor.mode == windows.STITCHED:
        states = windows.stitched(batch, encode, lambda n: int(extractor.num_frames(n)),
                                  extractor.unit, rate, **plan)
    else:
        states = windows.pooled(batch, encode, extractor.pool, rate, **plan)
    outputs = arrays_of([{f"layer{n}": h for n, h in sorted(item.items())} for item in states])
    if extractor.mode != windows.STITCHED:
        for item, out in zip(batch, outputs):
            out["times"] = item.times(rate)
    return outputs


def arrays_of(items: List[Dict[str, torch.Tensor]]) -> List[Dict[str, np.ndarray]]:
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
