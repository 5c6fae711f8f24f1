"""A speaker-embedding report: EER and cosine statistics over utterance pairs, a 2-D projection
coloured by speaker and a speaker-by-speaker cosine heatmap, so a user sees at a glance whether
the embeddings separate speakers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from speechdump.verification import metrics


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def pair_scores(vectors: Mapping[str, np.ndarray],
                utt2spk: Mapping[str, str]) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine of every utterance pair -> (scores, same_speaker flags)."""
    ids = list(vectors)
    unit = _unit(np.stack([vectors[u] for u in ids]).astype(np.float64))
    cos = unit @ unit.T
    rows, cols = np.triu_indices(len(ids), k=1)
    speakers = np.array([utt2spk[u] for u in ids])
    return cos[rows, cols], speakers[rows] == speakers[cols]


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> Tuple[float, float]:
    """(EER, threshold) of same-speaker against different-speaker pairs: the verification back
    end's definition (speechdump.verification.metrics: ties are one threshold, the crossing
    interpolated between the two thresholds that straddle it)."""
    if same.all() or not same.any():
        raise ValueError("EER needs both same-speaker and different-speaker pairs")
    return metrics.equal_error_rate(metrics.error_rates(scores, same))


Stats = Tuple[float, float, float, int]


@dataclass
class Report:
    """What a set of utterance vectors shows. A set of one speaker (a single-speaker TTS corpus)
    has no different-speaker pairs and a set of one utterance per speaker no same-speaker
    pairs: those statistics, and the EER, which needs both, are None."""

    utterances: int
    speakers: int
    eer: Optional[float]
    threshold: Optional[float]
    same: Optional[Stats]  # mean, std, min, pairs
    diff: Optional[Stats]  # mean, std, max, pairs

    def no_eer_reason(self) -> str:
        if self.speakers < 2:
            return (f"EER needs two speakers or more; this set has {self.speakers} "
                    f"({self.utterances} utterances)")
        return "EER needs a speaker with two utterances or more; each speaker here has one"

    def text(self) -> str:
        lines = [f"utterances: {self.utterances}  speakers: {self.speakers}"]
        if self.eer is not None and self.threshold is not None:
            lines.append(f"EER over all utterance pairs: {100 * self.eer:.2f} % "
                         f"(threshold {self.threshold:.3f})")
        else:
            lines.append(f"EER: not computed: {self.no_eer_reason()}")
        s, d = self.same, self.diff
        lines.append(f"same-speaker cosine:      mean {s[0]:.3f}  std {s[1]:.3f}  "
                     f"min {s[2]:.3f}  ({s[3]} pairs)" if s else
                     "same-speaker cosine:      no pairs (no speaker has two utterances)")
        lines.append(f"different-speaker cosine: mean {d[0]:.3f}  std {d[1]:.3f}  "
                     f"max {d[2]:.3f}  ({d[3]} pairs)" if d else
                     "different-speaker cosine: no pairs (one speaker)")
        return "\n".join(lines)


def report_sample(ids: Sequence[str], utt2spk: Mapping[str, str], max_utterances: int,
                  per_speaker: int = 10, seed: int = 0) -> List[str]:
    """The utterances a report covers: all of them up to ``max_utterances``; past that (every
    pair of a large set would not fit in memory), up to ``per_speaker`` utterances (the first,
    in id order) of speakers drawn with a fixed seed, at most ``max_utterances`` in all."""
    if len(ids) <= max_utterances:
        return list(ids)
    by_speaker: Dict[str, List[str]] = {}
    for utt in sorted(ids):
        by_speaker.setdefault(utt2spk[utt], []).append(utt)
    speakers = sorted(by_speaker)
    order = np.random.default_rng(seed).permutation(len(speakers))
    chosen: List[str] = []
    for k in order:
        room = max_utterances - len(chosen)
        if room <= 0:
            break
        chosen.extend(by_speaker[speakers[k]][:min(per_speaker, room)])
    return sorted(chosen)


def summarize(vectors: Mapping[str, np.ndarray], utt2spk: Mapping[str, str]) -> Report:
    """The report of ``vectors``; the statistics a set lacks the pairs for are None."""
    if not vectors:
        raise ValueError("no utterance vectors to report on")
    scores, same = pair_scores(vectors, utt2spk)
    s, d = scores[same], scores[~same]
    eer = threshold = None
    if s.size and d.size:
        eer, threshold = equal_error_rate(scores, same)
    return Report(utterances=len(vectors), speakers=len({utt2spk[u] for u in vectors}),
                  eer=eer, threshold=threshold,
                  same=(float(s.mean()), float(s.std()), float(s.min()), int(s.size))
                  if s.size else None,
                  diff=(float(d.mean()), float(d.std()), float(d.max()), int(d.size))
                  if d.size else None)


def project_2d(matrix: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the (L2-normalised) rows: t-SNE, or PCA for few points or on request
    (a single point sits at the origin)."""
    unit = _unit(matrix.astype(np.float64))
    if len(unit) < 2:
        return np.zeros((len(unit), 2))
    if method == "tsne" and len(unit) >= 8:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(unit) - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine",
                    random_state=seed).fit_transform(unit)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(unit)


def plot(vectors: Mapping[str, np.ndarray], utt2spk: Mapping[str, str],
         speaker_vectors: Mapping[str, np.ndarray], title: str, png: str,
         method: str = "tsne") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(vectors)
    coords = project_2d(np.stack([vectors[u] for u in ids]), method)
    speakers: List[str] = sorted({utt2spk[u] for u in ids})
    colours = plt.get_cmap("tab20" if len(speakers) > 10 else "tab10")

    spk_ids = list(speaker_vectors)
    unit = _unit(np.stack([speaker_vectors[s] for s in spk_ids]).astype(np.float64))
    heat = unit @ unit.T

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.2))
    for k, spk in enumerate(speakers):
        mask = np.array([utt2spk[u] == spk for u in ids])
        left.scatter(coords[mask, 0], coords[mask, 1], s=36, color=colours(k % colours.N),
                     label=spk, edgecolors="black", linewidths=0.3)
    left.set_title(f"utterances ({'t-SNE' if method == 'tsne' and len(ids) >= 8 else 'PCA'})")
    left.set_xticks([])
    left.set_yticks([])
    if len(speakers) <= 30:
        left.legend(fontsize=7, loc="best", ncol=1 if len(speakers) <= 15 else 2)

    off_diagonal = heat[~np.eye(len(heat), dtype=bool)]
    floor = float(off_diagonal.min()) if off_diagonal.size else 0.0
    image = right.imshow(heat, vmin=floor, vmax=1.0, cmap="viridis")
    right.set_title("speaker-by-speaker cosine similarity")
    if len(spk_ids) <= 12:
        for (i, j), value in np.ndenumerate(heat):
            right.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                       color="black" if value > (1 + floor) / 2 else "white")
    if len(spk_ids) <= 40:
        right.set_xticks(range(len(spk_ids)), spk_ids, rotation=90, fontsize=7)
        right.set_yticks(range(len(spk_ids)), spk_ids, fontsize=7)
    fig.colorbar(image, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
