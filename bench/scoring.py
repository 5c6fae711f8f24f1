#!/usr/bin/env python3
"""Trial scoring at VoxCeleb1-O size against the 2 s goal: 37,611 trials over 4,708 test
utterances, AS-norm against a cohort of 6,000 speaker means (top 300), on this machine's cores.

Embeddings are random (the timing does not depend on what they hold) and written as Kaldi
ark/scp, as a stage writes them. Timed, alternated for ``--rounds`` rounds:

* ``scoring``: the back end alone, in this process (cosine, cohort statistics, AS-norm);
* ``command``: ``pyscripts/score_trials.py`` as a new process, from the arks to ``scores``,
  ``results`` and ``det.png`` (interpreter start, imports, reading, the plot included);
* ``loop``: what a plain script does, trial by trial (cosine of the pair, each side's cohort
  scores sorted for its top N), timed on ``--loop_trials`` trials and scaled to all of them.

    tools/venv/bin/python bench/scoring.py
    tools/venv/bin/python bench/scoring.py --dim 192 --backend plda
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump.kaldi_io import write_ark_scp  # noqa: E402
from speechdump.verification import plda  # noqa: E402
from speechdump.verification.pipeline import ScoringConfig, score  # noqa: E402
from speechdump.verification.scoring import Embeddings  # noqa: E402


def make_inputs(dest: Path, args) -> dict:
    rng = np.random.default_rng(0)
    speakers = rng.normal(size=(40, args.dim))
    labels = rng.integers(0, 40, args.utterances)
    # Noise 2.5 times the spread of the speakers: an EER of about 10 %, a weak model's.
    tests = {f"id{labels[k]:05d}-u{k:05d}": (speakers[labels[k]]
                                            + 2.5 * rng.normal(size=args.dim)).astype(np.float32)
             for k in range(args.utterances)}
    cohort = {f"c{k:05d}": rng.normal(size=args.dim).astype(np.float32)
              for k in range(args.cohort)}
    write_ark_scp(str(dest / "test.ark"), str(dest / "test.scp"), tests)
    write_ark_scp(str(dest / "cohort.ark"), str(dest / "cohort.scp"), cohort)
    ids = list(tests)
    pairs = rng.integers(0, len(ids), size=(args.trials, 2))
    with open(dest / "trials", "w") as f:
        for a, b in pairs:
            same = ids[a].split("-")[0] == ids[b].split("-")[0]
            f.write(f"{ids[a]} {ids[b]} {'target' if same else 'nontarget'}\n")
    files = {"trials": str(dest / "trials"), "scp": str(dest / "test.scp"),
             "cohort": str(dest / "cohort.scp")}
    if args.backend == "plda":
        train_ids = [f"t{k:06d}" for k in range(20000)]
        train_labels = rng.integers(0, 2000, len(train_ids))
        centres = rng.normal(size=(2000, args.dim))
        x = centres[train_labels] + rng.normal(size=(len(train_ids), args.dim))
        model = plda.train(Embeddings(train_ids, x, "synthetic"),
                           {u: str(train_labels[k]) for k, u in enumerate(train_ids)},
                           lda_dim=min(200, args.dim))
        model.save(str(dest / "plda.npz"))
        files["plda"] = str(dest / "plda.npz")
    return files


def config(files, args) -> ScoringConfig:
    return ScoringConfig(backend=args.backend, plda=files.get("plda"), norm="asnorm",
                         cohort=files["cohort"], top_n=args.top_n)


def time_scoring(files, args) -> float:
    """The back end alone: embeddings already in memory (read once before the clock)."""
    scored = score(files["trials"], files["scp"], files["scp"], config(files, args))
    return scored.seconds


def time_command(files, args, out: Path) -> float:
    cmd = [sys.executable, str(REPO / "pyscripts" / "score_trials.py"), "--backend",
           args.backend, *(["--plda", files["plda"]] if "plda" in files else []),
           "--norm", "asnorm", "--cohort", files["cohort"], "--top_n", str(args.top_n),
           files["trials"], files["scp"], files["scp"], str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ,
                                                              "PYTHONPATH": str(REPO)})
    return time.perf_counter() - start


def time_loop(files, args) -> float:
    """Trial by trial, as a plain script scores: seconds for all trials, from a sample."""
    import kaldiio

    vectors = {k: np.asarray(v, np.float64) for k, v in kaldiio.load_scp(files["scp"]).items()}
    cohort = np.stack([np.asarray(v, np.float64)
                       for v in kaldiio.load_scp(files["cohort"]).values()])
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    lines = Path(files["trials"]).read_text().splitlines()[:args.loop_trials]
    start = time.perf_counter()
    for line in lines:
        a, b, _ = line.split()
        e, t = vectors[a] / np.linalg.norm(vectors[a]), vectors[b] / np.linalg.norm(vectors[b])
        s = e @ t
        top_e = np.sort(cohort @ e)[::-1][:args.top_n]
        top_t = np.sort(cohort @ t)[::-1][:args.top_n]
        _ = 0.5 * ((s - top_e.mean()) / top_e.std() + (s - top_t.mean()) / top_t.std())
    return (time.perf_counter() - start) * args.trials / len(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=37611)
    p.add_argument("--utterances", type=int, default=4708)
    p.add_argument("--cohort", type=int, default=6000)
    p.add_argument("--top_n", type=int, default=300)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--backend", choices=["cosine", "plda"], default="cosine")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--loop_trials", type=int, default=2000)
    args = p.parse_args()
    print(f"{args.trials} trials over {args.utterances} utterances, cohort {args.cohort}, "
          f"top {args.top_n}, dimension {args.dim}, {args.backend} + AS-norm, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_inputs(Path(tmp), args)
        time_scoring(files, args)  # warm-up: page cache, BLAS threads
        times = {"scoring": [], "command": [], "loop": []}
        for _ in range(args.rounds):
            times["scoring"].append(time_scoring(files, args))
            times["command"].append(time_command(files, args, Path(tmp) / "out"))
        times["loop"].append(time_loop(files, args))
        results = (Path(tmp) / "out" / "results").read_text().split("\n")[0]
    print(f"| what | median of {args.rounds} | runs |")
    print("|---|---|---|")
    for name in ("scoring", "command"):
        print(f"| {name} | {statistics.median(times[name]):.2f} s | "
              f"{' '.join(f'{t:.2f}' for t in times[name])} |")
    print(f"| loop (from {args.loop_trials} trials) | {times['loop'][0]:.1f} s | |")
    print(f"scoring: {times['loop'][0] / statistics.median(times['scoring']):.0f}x the loop; "
          f"the goal is <= 2 s ({results})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
