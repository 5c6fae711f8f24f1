#!/usr/bin/env python3
"""On a GPU: the engine's throughput against the model's forward pass alone (the limit) and a
per-utterance loop, at each ``--precision``, with the agreement each precision costs.

Models (random-init, real size; nothing downloads): SpeechBrain ECAPA-TDNN C=1024, HuBERT base
(hidden state 6, and all 13), a Whisper base-size encoder (6 layers of 512), EnCodec 24 kHz
(its default config, 6 kbps). Corpus: the real recordings of samples/real_speech repeated to
about ``--minutes`` of audio. For each model and precision, in one process:

* loop: each utterance decoded, resampled, prepared and run alone (one forward per utterance);
* engine: ``engine.run`` as a job runs it (loader threads, length-sorted padded batches);
* limit: the same batches (planned as the engine plans them, window by window) from inputs
  prepared in memory beforehand: the forward passes alone, as the extractor runs them (its
  host-to-device copy of the batch included);
* loaders: decode + resample + prepare of the corpus alone on the engine's loader threads;
  ``loader share`` = their wall / the engine's wall (near 1: the loaders bound the engine);
* peak GPU memory of the engine's run; agreement of the engine's outputs with fp32's (lowest
  cosine for vectors, largest difference / largest |value| for frames, identical tokens).

Throughputs are audio seconds per wall second; each timed pass follows an untimed one.

    tools/venv/bin/python bench/gpu.py --device cuda --minutes 30
    tools/venv/bin/python bench/gpu.py --device cpu --minutes 0.5 --small   # a smoke run
"""

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump import engine, precision  # noqa: E402
from speechdump.batching import plan_batches  # noqa: E402
from speechdump.errors import OptionError  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402
from sample_corpus import corpus  # noqa: E402  (bench/: the samples repeated)
from models import MODELS, build  # noqa: E402  (bench/: the models at real size)

def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    fn()  # untimed: kernel choices per shape, caches
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def agreement(got: dict, reference: dict) -> str:
    """How outputs at a precision compare with fp32's."""
    pairs = [(np.asarray(g), np.asarray(r)) for utt in reference
             for g, r in (zip(got[utt].values(), reference[utt].values())
                          if isinstance(reference[utt], dict) else [(got[utt], reference[utt])])]
    if pairs[0][1].dtype.kind == "i":
        same = sum(int((g == r).sum()) for g, r in pairs)
        return f"{100 * same / sum(r.size for _, r in pairs):.2f} % identical tokens"
    if pairs[0][1].ndim == 1:
        cosine = min(float(g @ r / np.linalg.norm(g) / np.linalg.norm(r)) for g, r in pairs)
        return f"lowest cosine {cosine:.5f}"
    worst = max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in pairs)
    return f"max difference / max |value| {worst:.1e}"


def run_model(name, path, utterances, args):
    toolkit, options = MODELS[name]
    if args.small and name == "hubert-layer6":
        options = {"layers": "3"}  # the small HuBERT has 4 layers
    extractor = load_extractor(toolkit, str(path), args.device, **options)
    opts = engine.EngineOptions(batch_seconds=args.batch_seconds, batch_size=args.batch_size,
                                num_workers=args.num_workers, progress=False,
                                device=args.device)
    loader = engine._Loader(extractor, opts)
    with ThreadPoolExecutor(max(args.num_workers, 1)) as pool:
        loaded, loaders_wall = timed(lambda: list(pool.map(loader, utterances)), "cpu")
    audio = sum(seconds for _, _, seconds in loaded)
    fp32 = None
    for value in args.precisions.split(","):
        try:
            precision.check(value, args.device, extractor.streams, toolkit)
        except OptionError as exc:
            print(f"| {name} | {value} | refused: {exc} |")
            continue
        precision.configure(value, args.device)
        opts.precision = value

        def loop():
            out = []
            for utt in utterances:
                item = loader(utt)[1]  # decode, resample, prepare: outside autocast, as jobs
                with precision.forward_context(value, args.device):
                    out.append(extractor.forward([item])[0])
            return out

        def limit():
            for window in engine._windows(iter(loaded), opts.sort_window,
                                          opts.sort_window_seconds):
                items = [item for _, item, _ in window]
                size = min(opts.batch_size, extractor.max_batch_size or opts.batch_size)
                for batch in plan_batches([extractor.cost(i) for i in items], opts.batch_seconds,
                                          size, extractor.batch_cost,
                                          extractor.equal_lengths_only):
                    with precision.forward_context(value, args.device):
                        extractor.forward([items[i] for i in batch])

        def run_engine():
            out = {}
            engine.run(utterances, extractor, out.__setitem__, opts)
            return out

        _, loop_wall = timed(loop, args.device)
        _, limit_wall = timed(limit, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        out, engine_wall = timed(run_engine, args.device)
        peak = (torch.cuda.max_memory_allocated() / 2 ** 20
                if args.device.startswith("cuda") else float("nan"))
        fp32 = out if value == precision.FP32 else fp32
        agree = agreement(out, fp32) if fp32 is not None and value != precision.FP32 else ""
        print(f"| {name} | {value} | {audio / loop_wall:.0f} | {audio / engine_wall:.0f} | "
              f"{audio / limit_wall:.0f} | **{limit_wall / engine_wall:.2f}** | "
              f"{loop_wall / engine_wall:.2f} | {peak:.0f} | "
              f"{loaders_wall / engine_wall:.2f} | {agree} |", flush=True)
    precision.configure(precision.FP32, args.device)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--models", default="ecapa,hubert-layer6,hubert-all,whisper-base,encodec")
    p.add_argument("--precisions", default=",".join(precision.PRECISIONS))
    p.add_argument("--batch_seconds", type=float, default=300.0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=8, help="loader threads")
    p.add_argument("--small", action="store_true", help="the tests' small models (smoke run)")
    args = p.parse_args()
    utterances = corpus(args.minutes)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{device}; {len(utterances)} utterances (the samples repeated); batch_seconds "
          f"{args.batch_seconds}, batch_size {args.batch_size}, {args.num_workers} loader threads")
    print("| model | precision | loop s/s | engine s/s | limit s/s | engine / limit | "
          "engine / loop | peak GPU MiB | loader share | agreement with fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = build(name, Path(tmp) / name, args.small)
            run_model(name, path, utterances, args)


if __name__ == "__main__":
    main()
