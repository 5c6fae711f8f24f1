"""Silero VAD (``--toolkit silero_vad``): the speech regions of each utterance.

Output: one int32 ``[regions, 2]`` matrix per utterance, each row the ``[start, end)`` of a
speech region in samples at 16 kHz from the utterance's start (no rows where there is no
speech). ``scripts/compute_vad.sh`` turns them into ``segments`` and a data dir
(``speechdump.vad``).

The model is the TorchScript one shipped in the ``silero-vad`` wheel (``silero_vad/data/
silero_vad.jit``), loaded from that file: nothing is downloaded. Its regions are those of
silero's own ``get_speech_timestamps`` on each utterance alone, with the same options: the
per-frame speech probabilities are computed here and go through silero's own
``get_speech_timestamps_from_probs``.

How the probabilities are computed, batched. Silero's model reads 512-sample chunks (32 ms)
one at a time, each with the last 64 samples of the previous one before it (zeros before the
first), the final chunk zero-padded; an STFT and convolutional encoder make one vector of each
chunk with nothing carried over, and an LSTM cell carries its state from chunk to chunk. So the
encoder runs on every chunk of every utterance of a batch in one pass, and only the LSTM cell
steps through time, over the utterances still running at each step (rows of its batch,
each with its own state): nothing of one utterance reaches another. The probabilities differ
from silero's chunk-at-a-time loop only by the rounding of the batched kernels (at most 6.2e-6
on the 26 sample utterances with 1-2 s of noise around each, all in one batch, one CPU thread),
which could move a region boundary only where a probability lies within that rounding of a
threshold, and then by one 512-sample frame: every boundary there was equal
(``test/test_vad.py`` checks within one frame).
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import List, Optional

import numpy as np

from speechdump import compat
from speechdump.errors import ModelError, OptionError
from speechdump.extractors import register
from speechdump.extractors.base import INT, TOKENS, Extractor, Option, Stream, non_negative

SAMPLE_RATE = 16000
CHUNK = 512  # samples per model step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous chunk the model sees before each chunk
# chunks put through the encoder at once (bounds its memory: about 20 kB each)
ENCODER_CHUNKS = 4096


def _probability(value) -> Optional[str]:
    return None if 0.0 < value < 1.0 else "must lie between 0 and 1"


def model_path() -> str:
    """The TorchScript model inside the installed silero-vad package (found without importing
    it: its import sets torch's thread count to 1)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("silero-vad is not installed (tools/requirements.txt pins it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "silero_vad.jit")
    if not os.path.isfile(path):
        raise ModelError(f"{path} is missing: the silero-vad wheel ships its model there")
    return path


def silero_utils():
    """``silero_vad.utils_vad``, imported without the side effect of ``silero_vad.model``
    (``torch.set_num_threads(1)`` at import): the job's thread count is kept."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import utils_vad
    finally:
        torch.set_num_threads(threads)
    return utils_vad


@register("silero_vad")
class SileroVadExtractor(Extractor):
    options = (
        Option("threshold", float, 0.5, "speech probability at or above which a 32 ms frame "
               "starts speech (silero's threshold; it ends below threshold - 0.15)",
               check=_probability),
        Option("min_speech", float, 0.25, "seconds: shorter speech regions are dropped",
               check=non_negative),
        Option("min_silence", float, 0.1, "seconds of silence that end a speech region",
               check=non_negative),
        Option("pad", float, 0.03, "seconds added to each side of a region (halving the "
               "silence between regions closer than twice this)", check=non_negative),
    )
    # [start, end) samples at 16 kHz per region; an utterance without speech has no rows
    streams = (Stream(kind=INT, shape=TOKENS, dim=2),)
    packages = ("silero-vad",)
    sample_rate = SAMPLE_RATE
    # The forward pass keeps its state in local variables: several may run at once.
    concurrent_forward = True

    @classmethod
    def model_files(cls, model):
        return [model_path()]

    def __init__(self, model: Optional[str] = None, device: str = "cpu",
                 threshold: float = 0.5, min_speech: float = 0.25, min_silence: float = 0.1,
                 pad: float = 0.03):
        if model:
            raise OptionError(f"silero_vad takes no model (it loads the one in its wheel); "
                              f"got --model '{model}'")
        import torch

        self.threshold = float(threshold)
        self.min_speech = float(min_speech)
        self.min_silence = float(min_silence)
        self.pad = float(pad)
        self.device = torch.device(device)
        self._timestamps = silero_utils().get_speech_timestamps_from_probs
        model = torch.jit.load(model_path(), map_location=self.device)
        model.eval()
        # The 16 kHz network, run in parts below: checked to have them, and on a probe to give
        # the model's own chunk-by-chunk probabilities (speechdump/compat.py).
        self.model = compat.silero_network(model)
        self.lstm = self.model.decoder.rnn
        self.head = self.model.decoder.decoder
        compat.check_silero_probabilities(model, self.probabilities)

    def silero_options(self) -> dict:
        """The keywords of silero's ``get_speech_timestamps`` these options stand for."""
        return dict(threshold=self.threshold, sampling_rate=SAMPLE_RATE,
                    min_speech_duration_ms=self.min_speech * 1000,
                    min_silence_duration_ms=self.min_silence * 1000,
                    speech_pad_ms=self.pad * 1000)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(wave, dtype=np.float32)

    def cost(self, wave: np.ndarray) -> float:
        return max(len(wave), 1) / SAMPLE_RATE

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        probs = self.probabilities(batch)
        out = []
        for wave, p in zip(batch, probs):
            regions = self._timestamps(p.tolist(), audio_length_samples=len(wave),
                                       **self.silero_options())
            out.append(np.array([[r["start"], r["end"]] for r in regions],
                                dtype=np.int32).reshape(-1, 2))
        return out

    def probabilities(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        """Silero's speech probability of every 512-sample chunk of each waveform."""
        import torch

        counts = [math.ceil(len(w) / CHUNK) for w in batch]
        if not any(counts):
            return [np.zeros(0, dtype=np.float32) for _ in batch]
        # Every chunk of every utterance with the 64 samples before it: [chunks, 576].
        inputs = []
        for wave, n in zip(batch, counts):
            padded = np.zeros(CONTEXT + n * CHUNK, dtype=np.float32)
            padded[CONTEXT:CONTEXT + len(wave)] = wave
            frames = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + CHUNK)[::CHUNK]
            inputs.append(frames)
        with torch.inference_mode():
            x = torch.from_numpy(np.concatenate(inputs)).to(self.device)
            feats = torch.cat([self.model.encoder(self.model.run_extractors(part))
                               for part in x.split(ENCODER_CHUNKS)]).squeeze(-1)
            # Time-major over the utterances, longest first: at step t the rows still running
            # are a prefix of the order, and each keeps its own LSTM state.
            order = sorted(range(len(batch)), key=lambda i: -counts[i])
            lengths = np.array([counts[i] for i in order])
            first = torch.as_tensor(np.concatenate(([0], np.cumsum(counts)[:-1]))[order],
                                    device=self.device)
            hidden = torch.zeros(lengths[0], len(batch), feats.shape[1], device=self.device)
            h = c = None
            for t in range(lengths[0]):
                rows = int(np.count_nonzero(lengths > t))
                state = None if h is None else (h[:rows], c[:rows])
                h, c = self.lstm(feats[first[:rows] + t], state)
                hidden[t, :rows] = h
            probs = self.head(hidden.permute(1, 0, 2).reshape(-1, feats.shape[1], 1).float())
            probs = probs.squeeze(1).mean(dim=1).reshape(len(batch), -1).cpu().numpy()
        result: List[np.ndarray] = [None] * len(batch)  # type: ignore[list-item]
        for r, i in enumerate(order):
            result[i] = probs[r, :counts[i]]
        return result
