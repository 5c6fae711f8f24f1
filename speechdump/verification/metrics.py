"""Detection error rates of scored trials: EER, minDCF and the DET curve.

A trial is accepted when its score is at least the threshold. For each distinct score t (and
the two ends: accept everything, reject everything)

    P_miss(t) = #targets scoring < t / #targets
    P_fa(t)   = #non-targets scoring >= t / #non-targets

* EER: where P_miss and P_fa cross. Between the two consecutive thresholds that straddle the
  crossing, both rates are interpolated linearly and the EER is their common value there.
* minDCF: min over thresholds of c_miss * P_miss * p + c_fa * P_fa * (1 - p), divided by
  min(c_miss * p, c_fa * (1 - p)) (the cost of the better of accepting or rejecting every
  trial), for a prior p of targets (p_target): NIST SRE's normalised detection cost.

Tied scores form one threshold: no tie-break order can change a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from speechdump.errors import TrialError


@dataclass(frozen=True)
class ErrorRates:
    """P_miss and P_fa at every threshold, from accepting everything to rejecting everything:
    ``thresholds[k]`` is the score the k-th point accepts from (the lowest score first, +inf
    last)."""

    thresholds: np.ndarray
    p_miss: np.ndarray
    p_fa: np.ndarray
    targets: int
    nontargets: int


def error_rates(scores: np.ndarray, is_target: np.ndarray) -> ErrorRates:
    scores = np.asarray(scores, dtype=np.float64)
    is_target = np.asarray(is_target, dtype=bool)
    if scores.shape != is_target.shape or scores.ndim != 1:
        raise TrialError("scores and labels must be vectors of one length")
    if not np.isfinite(scores).all():
        raise TrialError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    targets, nontargets = int(is_target.sum()), int((~is_target).sum())
    if not targets or not nontargets:
        raise TrialError(f"error rates need target and non-target trials; these have {targets} "
                         f"targets and {nontargets} non-targets")
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_target = scores[order], is_target[order]
    # Positions where a new distinct score starts: the thresholds.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    below_targets = np.cumsum(np.r_[0, sorted_target])[starts]  # targets scoring < threshold
    below_nontargets = starts - below_targets
    thresholds = np.r_[sorted_scores[starts], np.inf]
    miss = np.r_[below_targets, targets] / targets
    fa = 1.0 - np.r_[below_nontargets, nontargets] / nontargets
    return ErrorRates(thresholds, miss, fa, targets, nontargets)


def equal_error_rate(rates: ErrorRates) -> Tuple[float, float]:
    """(EER, threshold) where P_miss and P_fa cross, interpolated between the two thresholds
    that straddle the crossing (the threshold interpolated as the rates are; next to +inf, the
    highest score)."""
    diff = rates.p_miss - rates.p_fa  # rises from -1 (accept all) to +1 (reject all)
    k = int(np.argmax(diff >= 0))  # first threshold where miss >= fa
    if diff[k] == 0:
        return float(rates.p_miss[k]), float(rates.thresholds[k])
    d0, d1 = diff[k - 1], diff[k]
    t = d0 / (d0 - d1)
    eer = rates.p_fa[k - 1] + t * (rates.p_fa[k] - rates.p_fa[k - 1])
    lo, hi = rates.thresholds[k - 1], rates.thresholds[k]
    return float(eer), float(lo + t * (hi - lo) if np.isfinite(hi) else lo)


def min_dcf(rates: ErrorRates, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
            ) -> Tuple[float, float]:
    """(normalised minDCF, its threshold) at prior ``p_target``."""
    if not 0 < p_target < 1:
        raise TrialError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise TrialError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    cost = c_miss * rates.p_miss * p_target + c_fa * rates.p_fa * (1 - p_target)
    k = int(np.argmin(cost))
    return float(cost[k] / min(c_miss * p_target, c_fa * (1 - p_target))), \
        float(rates.thresholds[k])


@dataclass(frozen=True)
class OperatingPoint:
    p_target: float
    c_miss: float
    c_fa: float

    def label(self) -> str:
        return f"minDCF(p_target={self.p_target:g},c_miss={self.c_miss:g},c_fa={self.c_fa:g})"


def figures(scores: np.ndarray, is_target: np.ndarray, points: Sequence[OperatingPoint]
            ) -> Tuple[ErrorRates, list]:
    """The error rates and [(name, value, threshold)]: EER (in percent), then each minDCF."""
    rates = error_rates(scores, is_target)
    eer, eer_threshold = equal_error_rate(rates)
    rows = [("EER", 100 * eer, eer_threshold)]
    rows += [(point.label(), *min_dcf(rates, point.p_target, point.c_miss, point.c_fa))
             for point in points]
    return rates, rows
