#!/usr/bin/env python3
"""Which CPU layout is faster for each model: a job's C cores as one forward pass on C torch
threads (``intra_op``, the plain loop's way) or as C single-threaded passes at once
(``passes``). The extractors' ``cpu_layout`` declarations come from this bench.

Each model runs the engine over the real recordings of samples/real_speech repeated to
``--minutes`` of audio, in both layouts, alternated for ``--rounds`` rounds (one untimed warm-up
first); printed: every wall time, the medians, passes / intra_op, and how far the two layouts'
outputs are apart (rounding: the kernels differ with the thread count).

    tools/venv/bin/python bench/cpu_layout.py --rounds 3
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump import engine  # noqa: E402
from speechdump.device import cpu_description  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402
from models import MODELS, build  # noqa: E402  (bench/: the models at real size)
from sample_corpus import corpus  # noqa: E402  (bench/: the samples repeated)


def run(extractor, utterances, layout: str, cores: int) -> tuple:
    """(wall seconds, {utt: output}) of the engine at ``layout`` on ``cores`` cores."""
    workers, threads = (cores, 1) if layout == "passes" else (1, cores)
    torch.set_num_threads(threads)
    outputs = {}

    def write(utt_id, array):
        outputs[utt_id] = array

    options = engine.EngineOptions(compute_workers=workers, progress=False)
    with threadpool_limits(threads):
        start = time.perf_counter()
        engine.run(utterances, extractor, write, options)
        return time.perf_counter() - start, outputs


def largest_difference(a: dict, b: dict) -> float:
    """max |a - b| / max |b| over every output (streams flattened)."""
    def flat(value):
        if isinstance(value, dict):
            return np.concatenate([np.ravel(v) for v in value.values()])
        return np.ravel(value)
    return max(float(np.abs(flat(a[k]) - flat(b[k])).max() / np.abs(flat(b[k])).max())
               for k in b)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resemblyzer,ecapa,hubert-layer6,whisper-base-last")
    p.add_argument("--minutes", type=float, default=2.5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cores", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    utterances = corpus(args.minutes)
    print(cpu_description())
    print(f"{len(utterances)} utterances; {args.cores} cores; {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            toolkit, options = MODELS[name]
            model = build(name, Path(tmp) / name)
            extractor = load_extractor(toolkit, str(model) if model else None, "cpu", **options)
            if not extractor.concurrent_forward:
                print(f"{name}: {toolkit} runs one pass at a time: intra_op only")
                continue
            run(extractor, utterances[:4], "intra_op", args.cores)  # warm-up
            walls = {"intra_op": [], "passes": []}
            outputs = {}
            for round_ in range(args.rounds):
                order = ["intra_op", "passes"][::1 if round_ % 2 == 0 else -1]
                for layout in order:
                    wall, outputs[layout] = run(extractor, utterances, layout, args.cores)
                    walls[layout].append(wall)
            intra, passes = (statistics.median(walls[k]) for k in ("intra_op", "passes"))
            print(f"{name}: intra_op {' '.join(f'{w:.1f}' for w in walls['intra_op'])} s | "
                  f"passes {' '.join(f'{w:.1f}' for w in walls['passes'])} s | passes / "
                  f"intra_op {passes / intra:.2f} | outputs apart by "
                  f"{largest_difference(outputs['passes'], outputs['intra_op']):.1e} "
                  "(of the largest |value|)", flush=True)


if __name__ == "__main__":
    main()
