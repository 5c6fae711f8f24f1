"""Quality measures (``--toolkit quality``): one float32 vector per utterance holding
``speechdump.quality.FIELDS`` (duration s, speech share, level dBFS, clip share, SNR dB).

The speech regions come from Silero VAD run batched exactly as ``--toolkit silero_vad`` (same
options, same regions); the measures are numpy over each utterance (``speechdump.quality``).
``scripts/compute_quality.sh`` writes them as the tables ``utt2<field>``.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np

from speechdump.errors import OptionError
from speechdump.extractors import register
from speechdump.extractors.base import FLOAT, VECTOR, Extractor, Stream
from speechdump.extractors.silero_vad import SAMPLE_RATE, SileroVadExtractor, model_path
from speechdump.quality import FIELDS, clip_ratio, measure


@register("quality")
class QualityExtractor(Extractor):
    options = SileroVadExtractor.options
    # exact: float32 whatever --dtype says (a duration or an SNR is not a feature to squeeze)
    streams = (Stream(kind=FLOAT, shape=VECTOR, dim=len(FIELDS), exact=True),)
    packages = ("silero-vad",)
    sample_rate = SAMPLE_RATE
    concurrent_forward = True
    measures_decoded = True
    revision = 2  # 2: the clip ratio of the audio as decoded, no longer of the 16 kHz downmix

    @classmethod
    def model_files(cls, model):
        return [model_path()]

    def __init__(self, model: Optional[str] = None, device: str = "cpu",
                 threshold: float = 0.5, min_speech: float = 0.25, min_silence: float = 0.1,
                 pad: float = 0.03):
        if model:
            raise OptionError(f"quality takes no model (its VAD is the one in the silero-vad "
                              f"wheel); got --model '{model}'")
        self.vad = SileroVadExtractor(device=device, threshold=threshold,
                                      min_speech=min_speech, min_silence=min_silence, pad=pad)

    def prepare(self, wave: np.ndarray) -> Item:
        return self.prepare_decoded(wave, wave[:, None])

    def prepare_decoded(self, wave: np.ndarray, decoded: np.ndarray) -> Item:
        # Clipping is counted where it happened: resampling rings a clipped stretch off the
        # rails (a 44.1 kHz recording clipped on 3.8 % of its samples shows 2.2 % at 16 kHz),
        # and a downmix halves a channel clipped alone.
        return Item(np.ascontiguousarray(wave, dtype=np.float32), clip_ratio(decoded))

    def cost(self, item: Item) -> float:
        return max(len(item.wave), 1) / SAMPLE_RATE

    def forward(self, batch: List[Item]) -> List[np.ndarray]:
        regions = self.vad.forward([item.wave for item in batch])
        return [measure(item.wave, r, item.clip_ratio) for item, r in zip(batch, regions)]


class Item(NamedTuple):
    wave: np.ndarray  # mono, 16 kHz
    clip_ratio: float  # of the audio as decoded
