"""What every extractor provides to the engine."""

from __future__ import annotations

import abc
import os
from typing import Any, List, Optional, Sequence

import numpy as np


def looks_like_local_path(model: str) -> bool:
    """A model name that can only be meant as a local path (a hub name is ``owner/name``)."""
    return (os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
            or os.path.exists(model))


class Extractor(abc.ABC):
    """Turns waveforms into arrays in two steps the engine can overlap.

    ``prepare`` runs in loader threads, one utterance at a time (per-utterance normalisation,
    features, crops); it raises ``ValueError(reason)`` for audio the model cannot use.
    ``forward`` runs the model on a batch of prepared items and returns one array each, trimmed
    to that item's true length: the same array the item would give alone.
    """

    sample_rate: int  # the rate ``prepare`` expects its waveform at
    min_seconds: float = 0.0  # shorter input is rejected as a bad utterance
    # True when the model cannot be told true lengths (no masks): the engine then batches only
    # items of identical cost, so no item is ever padded.
    equal_lengths_only: bool = False
    # A cap the extractor puts on --batch_size (None: none), e.g. where batching is slower.
    max_batch_size: Optional[int] = None
    # Named outputs: ``forward`` returns a dict {name: array} per item, or one array when the
    # only stream is unnamed (""). Each stream becomes its own ark/scp.
    streams: Sequence[str] = ("",)
    # Frame-level outputs ([frames, dim] per utterance; utt2num_frames is written and checked)
    # rather than one vector per utterance.
    frame_level: bool = False
    # Streams kept in float32 whatever --dtype says (e.g. window time stamps).
    exact_streams: Sequence[str] = ()

    @abc.abstractmethod
    def prepare(self, wave: np.ndarray) -> Any:
        ...

    @abc.abstractmethod
    def cost(self, prepared: Any) -> float:
        """Seconds of audio the item puts through the model: the sort key for batching."""

    def batch_cost(self, costs: Sequence[float]) -> float:
        """Seconds a batch of these items costs; by default padded to its longest item."""
        return max(costs) * len(costs)

    @abc.abstractmethod
    def forward(self, batch: List[Any]) -> List[np.ndarray]:
        ...
