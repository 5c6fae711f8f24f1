"""Length-bucketed batches, and padding with the true lengths kept."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from speechdump.lazy import torch


def plan_batches(costs: Sequence[float], max_cost: float, max_items: int,
                 batch_cost=lambda c: max(c) * len(c), equal_only: bool = False) -> List[List[int]]:
    """Groups item indices into batches of similar cost (length), shortest first.

    A batch never exceeds ``max_items`` nor ``max_cost`` (as ``batch_cost`` counts it), except an
    item that alone exceeds the budget, which gets a batch of its own. With ``equal_only`` a batch
    holds items of identical cost only, for models that cannot be told true lengths.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    batches: List[List[int]] = []
    current: List[int] = []
    for i in order:
        candidate = current + [i]
        same_length = not equal_only or not current or costs[current[0]] == costs[i]
        fits = (same_length and len(candidate) <= max_items
                and batch_cost([costs[j] for j in candidate]) <= max_cost)
        if current and not fits:
            batches.append(current)
            candidate = [i]
        current = candidate
    if current:
        batches.append(current)
    return batches


def pad(waves: Sequence[np.ndarray], device="cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero-pads 1-D (or [T, F]) arrays along their first axis -> (batch[B, T, ...], lengths[B])."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros((len(waves), int(lengths.max()), *waves[0].shape[1:]),
                        dtype=torch.from_numpy(np.asarray(waves[0][:0])).dtype)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = torch.from_numpy(np.asarray(w))
    return batch.to(device), lengths.to(device)
