"""The DET curve: P_miss against P_fa on normal-deviate axes (probit scale), where the curve
of Gaussian target and non-target scores is a straight line; the EER and minDCF points
marked."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy.special import ndtri

from speechdump.verification.metrics import ErrorRates

TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]  # fractions
LIMITS = (0.0005, 0.5)


def _deviate(p: np.ndarray) -> np.ndarray:
    return ndtri(np.clip(p, LIMITS[0] / 2, 1 - LIMITS[0] / 2))


def plot_det(rates: ErrorRates, eer: float, dcf_points: Sequence[Tuple[str, float, float]],
             title: str, png: str) -> None:
    """Writes ``png``: the curve of ``rates``, the EER point (``eer`` a fraction) and, for each
    (label, value, threshold) of ``dcf_points``, the point of that threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot(_deviate(rates.p_fa), _deviate(rates.p_miss), color="tab:blue", lw=1.5)
    ax.plot(_deviate(eer), _deviate(eer), "o", color="tab:red",
            label=f"EER {100 * eer:.2f} %")
    for (label, value, threshold), marker in zip(dcf_points, "sD^v<>"):
        k = int(np.searchsorted(rates.thresholds, threshold))
        ax.plot(_deviate(rates.p_fa[k]), _deviate(rates.p_miss[k]), marker, color="tab:green",
                fillstyle="none", label=f"{label} {value:.4f}")
    ticks = _deviate(np.array(TICKS))
    names = [f"{100 * t:g}" for t in TICKS]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(*_deviate(np.array(LIMITS)))
    ax.set_ylim(*_deviate(np.array(LIMITS)))
    ax.plot(ax.get_xlim(), ax.get_ylim(), color="0.8", lw=0.8, zorder=0)  # P_miss = P_fa
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, color="0.9")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=80, format="png")
    plt.close(fig)
