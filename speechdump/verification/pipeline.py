"""One scoring run: a trial list scored by a back end over enrollment and test embeddings,
normalised against a cohort, written as ``scores``, ``results`` and ``det.png``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from speechdump.data import atomic_path, read_keys, read_table
from speechdump.errors import TrialError
from speechdump.verification.metrics import OperatingPoint, figures
from speechdump.verification.plda import PldaBackend, PldaModel
from speechdump.verification.scoring import (CosineBackend, Embeddings, normalise,
                                             read_embeddings, require_dim, require_ids,
                                             speaker_groups)
from speechdump.verification.trials import Trials, read_trials

NORMS = ("none", "snorm", "asnorm")


@dataclass
class ScoringConfig:
    backend: str = "cosine"
    plda: Optional[str] = None
    norm: str = "none"
    cohort: Optional[str] = None
    top_n: int = 300
    mean_scp: Optional[str] = None
    enroll_by: str = "utt"
    data_dir: Optional[str] = None

    def check(self) -> None:
        """Option clashes, before any file is read."""
        if self.backend not in ("cosine", "plda"):
            raise TrialError(f"--backend must be cosine or plda, got '{self.backend}'")
        if self.backend == "plda" and not self.plda:
            raise TrialError("--backend plda needs --plda <model> (scripts/train_plda.sh)")
        if self.backend == "plda" and self.mean_scp:
            raise TrialError("--mean_scp is for --backend cosine; a PLDA model subtracts its "
                             "own training mean")
        if self.norm not in NORMS:
            raise TrialError(f"--norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        if self.norm != "none" and not self.cohort:
            raise TrialError(f"--norm {self.norm} needs --cohort <scp> (e.g. the speaker "
                             "embeddings spk_<tag>.scp of a training set)")
        if self.enroll_by not in ("utt", "spk"):
            raise TrialError(f"--enroll_by must be utt or spk, got '{self.enroll_by}'")
        if self.enroll_by == "spk" and not self.data_dir:
            raise TrialError("--enroll_by spk needs --data_dir (its utt2spk groups the "
                             "enrollment utterances)")


@dataclass
class Scored:
    trials: Trials
    scores: np.ndarray
    cohort_size: int
    seconds: float


def score(trials_path: str, enroll_scp: str, test_scp: str, config: ScoringConfig) -> Scored:
    config.check()
    start = time.perf_counter()
    wav_scp = utt2spk = None
    if config.data_dir:
        wav_scp = read_table(os.path.join(config.data_dir, "wav.scp"))
        if config.enroll_by == "spk":
            utt2spk = read_table(os.path.join(config.data_dir, "utt2spk"))
    enroll_keys = set(read_keys(enroll_scp))
    test_keys = enroll_keys if enroll_scp == test_scp else set(read_keys(test_scp))
    enroll_names = set(utt2spk.values()) if utt2spk is not None else enroll_keys
    trials = read_trials(trials_path, wav_scp, known_ids=enroll_names | test_keys)
    backend = _backend(config)

    enroll_ids = list(dict.fromkeys(trials.enroll))
    test_ids = list(dict.fromkeys(trials.test))
    require_ids(test_keys, test_ids, "test", trials_path, test_scp)
    groups = None
    if utt2spk is not None:
        require_ids(enroll_names, enroll_ids, "enrollment speaker", trials_path,
                    f"{config.data_dir}/utt2spk")
        groups = speaker_groups(utt2spk, enroll_ids, f"{config.data_dir}/utt2spk")
        enroll_ids = [u for s in enroll_ids for u in groups[s]]
    require_ids(enroll_keys, enroll_ids, "enrollment", trials_path, enroll_scp)
    if groups is None and os.path.abspath(enroll_scp) == os.path.abspath(test_scp):
        # One set on both sides (pairs within a test set): each vector is read, prepared and
        # scored against the cohort once.
        enroll_emb = test_emb = read_embeddings(test_scp, trials.ids())
    else:
        enroll_emb = read_embeddings(enroll_scp, enroll_ids)
        test_emb = read_embeddings(test_scp, test_ids)
    require_dim(test_emb, enroll_emb.dim, "test")
    if config.mean_scp:
        require_dim(Embeddings([], backend.mean[None], config.mean_scp), enroll_emb.dim,
                    "--mean_scp")

    test = backend.side(test_emb)
    enroll = test if enroll_emb is test_emb else backend.side(enroll_emb, groups)
    rows_e, rows_t = enroll.rows(trials.enroll), test.rows(trials.test)
    scores = backend.score_pairs(enroll, rows_e, test, rows_t)
    cohort_size = 0
    if config.norm != "none":
        cohort_emb = read_embeddings(config.cohort)
        require_dim(cohort_emb, enroll_emb.dim, "--cohort")
        cohort = backend.side(cohort_emb)
        cohort_size = len(cohort.ids)
        top_n = cohort_size if config.norm == "snorm" else config.top_n
        scores = normalise(backend, scores, enroll, rows_e, test, rows_t, cohort, top_n)
    return Scored(trials, scores, cohort_size, time.perf_counter() - start)


def _backend(config: ScoringConfig):
    if config.backend == "plda":
        return PldaBackend(PldaModel.load(config.plda))
    return CosineBackend(read_embeddings(config.mean_scp).matrix.mean(axis=0)
                         if config.mean_scp else None)


def write_outputs(scored: Scored, out_dir: str, points: Sequence[OperatingPoint],
                  title: str) -> List[tuple]:
    """Writes ``scores``; with labels also ``results`` and ``det.png`` and returns the figures
    [(name, value, threshold)]. Without labels, an earlier run's results and plot are removed:
    they would describe other scores."""
    os.makedirs(out_dir, exist_ok=True)
    trials = scored.trials
    labels = trials.is_target
    with atomic_path(os.path.join(out_dir, "scores")) as tmp, \
            open(tmp, "w", encoding="utf-8") as f:
        for k, (e, t) in enumerate(zip(trials.enroll, trials.test)):
            tail = "" if labels is None else (" target" if labels[k] else " nontarget")
            f.write(f"{e} {t} {scored.scores[k]:.6f}{tail}\n")
    results, det = os.path.join(out_dir, "results"), os.path.join(out_dir, "det.png")
    if labels is None:
        for path in (results, det):
            if os.path.exists(path):
                os.remove(path)
        return []
    rates, rows = figures(scored.scores, labels, points)
    with atomic_path(results) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for name, value, _ in rows:
            f.write(f"{name} {value:.4f}\n")
    from speechdump.verification.det import plot_det

    with atomic_path(det) as tmp:
        plot_det(rates, rows[0][1] / 100, rows[1:], title, tmp)
    return rows
