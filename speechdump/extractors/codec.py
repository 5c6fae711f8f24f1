"""Discrete tokens of neural audio codecs (EnCodec, DAC, Mimi, X-Codec), as speech language models
use them.

``--model`` is a local directory saved with ``save_pretrained`` (``config.json``, the weights,
``preprocessor_config.json``), e.g. a copy of facebook/encodec_24khz, descript/dac_16khz,
kyutai/mimi or hf-audio/xcodec-hubert-librispeech; the codec is chosen by the config's
``model_type`` and loaded with ``AutoModel`` (weights checked as every transformers model here:
``hf_models.load_checked``). The engine resamples the audio to the feature extractor's
``sampling_rate``; the feature extractor prepares each
utterance alone (DAC's, which X-Codec ships too, pads it to a multiple of the hop with zeros,
as ``DacFeatureExtractor`` does for ``model.encode``).

X-Codec (``XcodecModel``) quantises, with one residual quantiser, the concatenation of a DAC
encoder's frames and a semantic model's (HuBERT or WavLM: the mean of all its hidden states,
through a convolutional encoder), so every codebook carries both; its hop is the DAC encoder's
``prod(acoustic_model_config.downsampling_ratios)`` (320 at 16 kHz: 50 Hz, the stride of the
semantic model's convolutions too, which see the audio padded by hop/2 on each side so that
their frames line up with the DAC encoder's).

Output per utterance: an int32 matrix [frames, codebooks] (stream ``""``: ``<tag>.scp``), row t
holding frame t's code of each codebook, coarsest first (residual vector quantisation: codebook
k codes what codebooks 0..k-1 left over; Mimi's codebook 0 is its semantic one). Codes lie in
[0, codebook_size). ``frames = ceil(samples / hop)`` at the codec's rate (hop: 320 samples for
EnCodec 24 kHz (75 Hz), DAC 16 kHz and X-Codec (50 Hz), 1920 for Mimi (12.5 Hz); X-Codec's
input padded to a multiple of the hop, both of its encoders give samples / hop frames). The
stage also writes the Kaldi text form ``<tag>``: ``<utt> t0c0 t0c1 ... t0cK-1 t1c0 ...``
(frame-major, the order ESPnet's speech-LM codec tokenizers flatten in; codebook k of frame t
is token t*K+k).

Options: ``--codebooks N`` (DAC: the first N of n_codebooks; Mimi: N of num_quantizers, at
least its semantic ones; Moshi uses 8 of 32) or, for EnCodec and X-Codec, ``--bandwidth KBPS``,
one of the config's ``target_bandwidths``, which the model's ``encode`` takes; the codebooks
follow by the model's formula, ``floor(kbps * 1000 / (log2(codebook_size) * frames per
second))``, at least 1 (1.5 = 2 codebooks, 6 = 8, 24 = 32 for encodec_24khz; 0.5, 1, 1.5, 2,
4 = 1, 2, 3, 4, 8 for X-Codec's 1024 codes at 50 Hz, 0.5 kbps each); default all codebooks
(EnCodec, X-Codec: the highest bandwidth). ``--dedup true``: consecutive identical frames
(whole codebook vectors) collapse into one unit: ``<tag>.scp`` holds the units [units,
codebooks] and ``<tag>_durations.scp`` the frames of each unit [units]; repeating each unit by
its duration gives the frames back. utt2num_frames then counts units.

Batching keeps every token identical to the utterance alone. Codes are argmins over codebooks
(residual ones especially close), so a rounding difference of 1e-8 in the latents changes
codes. Measured on CPU with the test models, a batch of 4 copies of one input against it alone:
EnCodec gave 29-167 other codes of 1200 (its LSTM and its last convolution round by batch
size), DAC and Mimi none; X-Codec none either (a batch of 4 different 2 s segments, 1 and 2
threads). Zero padding changes an item's codes in all four (DAC's centred convolutions; Mimi's
encoder, which takes no padding mask, transformers#43377; EnCodec's padding of its causal
convolutions: 9740 of 2.9e5 codes differed over the 26 samples; X-Codec's semantic model gets
no attention mask and normalises over time: 441-551 of 800 codes of a 2 s item padded by 1 s).
Hence DAC, Mimi and X-Codec batch only utterances of identical prepared length
(``equal_lengths_only``), which corpora cut into fixed-length segments have, and EnCodec runs
one utterance per forward (``max_batch_size = 1``; turning oneDNN off and running the LSTMs
per item made its batches exact in a probe, but its codes then come from another convolution
kernel than the default ``model.encode``'s). EnCodec's latents
also round by the number of CPU threads (2e-8, enough to change a code of the test model on a
real recording), so it runs with one intra-op thread: tokens equal ``model.encode`` under
``torch.set_num_threads(1)`` whatever ``--nj`` and ``--num_threads`` are. On a GPU, where
cuDNN picks its algorithm by batch shape (not verified here), every codec runs one utterance
per forward. test/test_codec.py checks every token against ``model.encode`` alone. EnCodec
48 kHz (chunked, a scale per chunk to decode) is refused.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import INT, TOKENS, Extractor, Option, Stream, positive
from speechdump.hf_models import load_checked, read_config
from speechdump.lazy import torch

CODECS = ("encodec", "dac", "mimi", "xcodec")
# Codecs whose encode takes a bandwidth (one of the config's target_bandwidths), not a number of
# codebooks: the names the messages give them.
BANDWIDTH_CODECS = {"encodec": "EnCodec", "xcodec": "X-Codec"}


def dedup_frames(frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(units, durations): runs of identical consecutive rows (or values, for 1-D tokens)
    collapsed to one, and the length of each run; ``np.repeat(units, durations, axis=0)``
    gives ``frames`` back."""
    if len(frames) == 0:
        return frames, np.zeros(0, dtype=np.int32)
    rows = frames.reshape(len(frames), -1)
    starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]).any(axis=1)])
    durations = np.diff(np.r_[starts, len(frames)]).astype(np.int32)
    return frames[starts], durations


def _read_config(model: str) -> Dict[str, Any]:
    """The codec's config.json, checked to be one of CODECS with its preprocessor config."""
    if not os.path.isdir(os.path.expanduser(model)):
        raise ModelError(f"codec model '{model}' is not a directory")
    config = read_config(model, "codec", CODECS)
    kind = config["model_type"]
    if kind == "encodec" and (config.get("chunk_length_s") or config.get("normalize")):
        raise ModelError(f"codec model '{model}': chunked EnCodec (48 kHz, a scale per chunk) "
                         "is not supported; use a 24 kHz EnCodec")
    return config


def plan_codebooks(config: Dict[str, Any], codebooks: Optional[int],
                   bandwidth: Optional[float]) -> Tuple[int, Optional[float]]:
    """(number of codebooks, EnCodec bandwidth) the options ask of this codec config."""
    kind = config["model_type"]
    if kind in BANDWIDTH_CODECS:
        name = BANDWIDTH_CODECS[kind]
        if codebooks is not None:
            raise OptionError(f"--codebooks: {name} takes --bandwidth (its codebooks follow)")
        bandwidths = [float(b) for b in config["target_bandwidths"]]
        bandwidth = max(bandwidths) if bandwidth is None else bandwidth
        if bandwidth not in bandwidths:
            raise OptionError(f"--bandwidth {bandwidth}: this {name} has "
                              f"{', '.join(map(str, bandwidths))} (its target_bandwidths)")
        return _bandwidth_codebooks(config, bandwidth), bandwidth
    if bandwidth is not None:
        raise OptionError(f"--bandwidth is EnCodec's and X-Codec's; {kind} takes --codebooks")
    total = int(config["n_codebooks" if kind == "dac" else "num_quantizers"])
    least = int(config.get("num_semantic_quantizers", 1)) if kind == "mimi" else 1
    codebooks = total if codebooks is None else codebooks
    if not least <= codebooks <= total:
        raise OptionError(f"--codebooks {codebooks}: this {kind} has {total} codebooks"
                          + (f" (at least its {least} semantic ones)" if least > 1 else ""))
    return codebooks, None


def _bandwidth_codebooks(config: Dict[str, Any], bandwidth: float) -> int:
    """Codebooks EnCodec's or X-Codec's ``encode`` uses at ``bandwidth``, computed as the model
    does (``get_num_quantizers_for_bandwidth``: the float operations in its order, so that a
    stream's declared width is what the model returns)."""
    if config["model_type"] == "encodec":
        hop = math.prod(config["upsampling_ratios"])
        bits = math.log2(config["codebook_size"]) * math.ceil(config["sampling_rate"] / hop)
        return int(max(1, math.floor(bandwidth * 1000 / bits)))
    # X-Codec: its config class fills what config.json leaves to the defaults (the DAC part's
    # strides) and derives the frame rate and the number of quantisers it builds.
    from transformers import XcodecConfig

    xcodec = XcodecConfig.from_dict(config)
    per_codebook = math.log2(xcodec.codebook_size) * xcodec.frame_rate / 1000
    return min(xcodec.num_quantizers, int(max(1, math.floor(bandwidth / per_codebook))))


def codec_streams(codebooks: int, frame_shift: Optional[float], dedup: bool) -> List[Stream]:
    if not dedup:
        return [Stream(kind=INT, shape=TOKENS, frame_shift=frame_shift, dim=codebooks)]
    return [Stream(kind=INT, shape=TOKENS, dim=codebooks),
            Stream("durations", kind=INT, shape=TOKENS)]


@register("codec")
class CodecExtractor(Extractor):
    concurrent_forward = True
    # its latents need one torch thread anyway (module docstring)
    cpu_layout = "passes"
    needs_model = True
    packages = ("transformers",)
    model_help = ("a local directory holding a transformers EnCodec (24 kHz), DAC, Mimi or "
                  "X-Codec codec and its feature extractor (config.json, model weights, "
                  "preprocessor_config.json), e.g. a copy of facebook/encodec_24khz")
    options = (
        Option("codebooks", int, None, "codebooks per frame (DAC, Mimi; default all)",
               check=positive),
        Option("bandwidth", float, None, "EnCodec's or X-Codec's target bandwidth in kbps, "
               "one of its target_bandwidths (default the highest)", check=positive),
        Option("dedup", bool, False, "collapse runs of identical frames into units, with a "
               "durations stream"),
    )

    @classmethod
    def check(cls, model, options):
        super().check(model, options)
        config = _read_config(model)
        codebooks, _ = plan_codebooks(config, options["codebooks"], options["bandwidth"])
        return codec_streams(codebooks, None, options["dedup"])

    def __init__(self, model: Optional[str] = None, device: str = "cpu",
                 codebooks: Optional[int] = None, bandwidth: Optional[float] = None,
                 dedup: bool = False):
        if model is None:
            raise ModelError(f"codec needs --model: {self.model_help}")
        from transformers import AutoFeatureExtractor


        config = _read_config(model)
        self.kind = config["model_type"]
        self.codebooks, self.bandwidth = plan_codebooks(config, codebooks, bandwidth)
        source = os.path.abspath(os.path.expanduser(model))
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(
                source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"codec model '{model}': no usable feature-extractor config "
                             f"(preprocessor_config.json): {exc}") from exc
        self.model = load_checked("AutoModel", source, True, CODECS)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        self.hop = self._hop()
        self.min_seconds = self.hop / self.sample_rate
        self.dedup = dedup
        # A padded item's last frames change (module docstring): no codec here takes padding.
        self.equal_lengths_only = True
        alone = self.kind == "encodec" or self.device.type != "cpu"
        self.max_batch_size = 1 if alone else None
        self.streams = tuple(codec_streams(self.codebooks, self.hop / self.sample_rate, dedup))

    def _hop(self) -> int:
        """Samples per frame at the codec's rate."""
        config = self.model.config
        if self.kind != "mimi":
            return int(config.hop_length)  # X-Codec: its DAC encoder's strides
        return int(round(config.sampling_rate / config.frame_rate))  # Mimi: 24000 / 12.5

    def num_frames(self, num_samples: int) -> int:
        """Frames the codec makes of ``num_samples`` (prepared, at its rate)."""
        return -(-num_samples // self.hop)

    # -- engine interface -----------------------------------------------------------------

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        values = self.feature_extractor(np.asarray(wave, dtype=np.float32),
                                        sampling_rate=self.sample_rate,
                                        return_tensors="np")["input_values"]
        return np.ascontiguousarray(values.reshape(-1), dtype=np.float32)

    def cost(self, prepared: np.ndarray) -> float:
        return len(prepared) / self.sample_rate

    def encode(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        """Prepared waveforms -> per item its codes [frames, codebooks] (int64), one forward."""
        lengths = [len(x) for x in batch]
        if len(set(lengths)) > 1 and self.equal_lengths_only:
            raise RuntimeError(f"codec: a padded batch for {self.kind}, which cannot take one")
        values = torch.zeros(len(batch), 1, max(lengths), dtype=torch.float32)
        mask = torch.zeros(len(batch), 1, max(lengths), dtype=torch.bool)
        for i, x in enumerate(batch):
            values[i, 0, :len(x)] = torch.from_numpy(x)
            mask[i, 0, :len(x)] = True
        values, mask = values.to(self.device), mask.to(self.device)
        codes = self._codes(values, mask)
        if codes.shape[1] < self.codebooks:
            raise RuntimeError(f"codec: {self.kind} gave {codes.shape[1]} codebooks where "
                               f"{self.codebooks} were planned")
        codes = codes[:, :self.codebooks].cpu().numpy()
        frames = [self.num_frames(n) for n in lengths]
        if max(frames) != codes.shape[-1]:
            raise RuntimeError(f"codec: {self.kind} gave {codes.shape[-1]} frames where "
                               f"ceil(samples / {self.hop}) says {max(frames)}")
        return [np.ascontiguousarray(codes[i, :, :n].T) for i, n in enumerate(frames)]

    def _codes(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The model's codes [batch, codebooks, frames] of a [batch, 1, samples] batch."""
        if self.kind == "encodec":
            codes = self.model.encode(values, padding_mask=mask,
                                      bandwidth=self.bandwidth).audio_codes
            if codes.shape[0] != 1:
                raise RuntimeError("codec: chunked EnCodec output")
            return codes[0]
        if self.kind == "dac":
            return self.model.encode(values, n_quantizers=self.codebooks).audio_codes
        if self.kind == "xcodec":
            return self.model.encode(values, bandwidth=self.bandwidth).audio_codes
        return self.model.encode(values, num_quantizers=self.codebooks).audio_codes

    def forward(self, batch: List[np.ndarray]) -> List[Any]:
        threads = torch.get_num_threads()
        if self.kind == "encodec":
            torch.set_num_threads(1)  # its latents round by thread count (module docstring)
        try:
            with torch.inference_mode():
                tokens = [codes.astype(np.int32) for codes in self.encode(batch)]
        finally:
            torch.set_num_threads(threads)
        if not self.dedup:
            return tokens
        outputs = []
        for frames in tokens:
            units, durations = dedup_frames(frames)
            outputs.append({"": units, "durations": durations})
        return outputs
