"""A toolkit defined outside speechdump, found through SPEECHDUMP_PLUGINS: one class, one option
and an integer token stream.

Each 10 ms frame of the waveform becomes ``floor(rms * levels)`` (clipped to ``levels - 1``): a
token per frame. With ``--levels`` in the tens of thousands, tokens run past 2048, where float16
would round them: the stream must stay integer from the job to the reader.
"""

from typing import List, Optional

import numpy as np

from speechdump.extractors import register
from speechdump.extractors.base import INT, TOKENS, Extractor, Option, Stream, positive

FRAME = 160  # samples per token at 16 kHz


def levels_of(wave: np.ndarray, levels: int) -> np.ndarray:
    """The tokens of a 16 kHz waveform: the reference the tests compare the stage with."""
    frames = wave[:len(wave) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    return np.minimum(np.floor(rms * levels), levels - 1).astype(np.int64)


@register("test_levels")
class LevelsExtractor(Extractor):
    options = (Option("levels", int, 8, "number of energy levels", check=positive),)
    streams = (Stream(kind=INT, shape=TOKENS, frame_shift=FRAME / 16000),)
    sample_rate = 16000
    min_seconds = FRAME / 16000

    def __init__(self, model: Optional[str] = None, device: str = "cpu", levels: int = 8):
        self.levels = levels

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return levels_of(wave, self.levels)

    def cost(self, tokens: np.ndarray) -> float:
        return len(tokens) * FRAME / self.sample_rate

    def batch_cost(self, costs) -> float:
        return sum(costs)

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        return list(batch)
