#!/usr/bin/env python3
"""Where a CPU job's time goes: each part of the engine's work timed alone, in CPU seconds of
one thread, against the plain loop's forward at torch's default threads.

The parts, over the real recordings of samples/real_speech (26 utterances, 149 s of audio):
decode (soundfile, mono), resample (speechdump's resampler), prepare (the extractor's
per-utterance front end, e.g. Fbank + normalisation), forward (one utterance per pass, one
torch thread), write (kaldiio ark + scp). Then the same forward passes as the plain loop runs
them (``encode_batch`` / ``hidden_states``, torch's default threads), and as two
single-threaded passes at once (the engine's workers on two cores), in wall seconds.

What bounds a job on C cores: the forward work divided by C, if the loaders' work (decode +
resample + prepare, on their own threads) fits beside it; everything else is the difference.

    tools/venv/bin/python bench/engine_profile.py --toolkit speechbrain --model <ecapa dir>
    tools/venv/bin/python bench/engine_profile.py --toolkit ssl --model <hubert dir> --layers 6

Last, the limit of the forward passes: their floating-point operations against the machine's
measured peak (a large ``torch.mm`` at the same thread count), in both layouts.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump.audio import ResamplerCache, read_samples, select_channel  # noqa: E402
from speechdump.data import Utterance, read_table  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"


def thread_seconds(fn, *args):
    start = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - start


def wall_seconds(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toolkit", default="speechbrain")
    p.add_argument("--model", required=True)
    p.add_argument("--layers", default="6", help="ssl, whisper: the hidden states kept")
    p.add_argument("--repeat", type=int, default=2, help="timed passes; the best is kept")
    args = p.parse_args()
    options = {"layers": args.layers} if args.toolkit in ("ssl", "whisper") else {}
    torch.set_num_threads(1)
    extractor = load_extractor(args.toolkit, args.model, "cpu", **options)
    rate = extractor.sample_rate
    utterances = [Utterance(utt, str(SAMPLES / path))
                  for utt, path in read_table(SAMPLES / "wav.scp").items()]
    resamplers = ResamplerCache()
    parts = {name: float("inf") for name in
             ("decode", "resample", "prepare", "forward, 1 thread", "write")}
    for _ in range(args.repeat):
        spent = dict.fromkeys(parts, 0.0)
        prepared, outputs = [], []
        for utt in utterances:
            (samples, source_rate), t = thread_seconds(read_samples, utt)
            mono = select_channel(samples, "mean")
            spent["decode"] += t
            wave, t = thread_seconds(
                lambda: resamplers.resample(torch.from_numpy(np.ascontiguousarray(
                    mono, dtype=np.float32)), source_rate, rate).numpy())
            spent["resample"] += t
            item, t = thread_seconds(extractor.prepare, wave)
            spent["prepare"] += t
            prepared.append(item)
        for item in prepared:
            with torch.inference_mode():
                output, t = thread_seconds(extractor.forward, [item])
            spent["forward, 1 thread"] += t
            outputs.append(output[0])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.thread_time()
            with kaldiio.WriteHelper(f"ark,scp:{tmp}/o.ark,{tmp}/o.scp") as writer:
                for utt, output in zip(utterances, outputs):
                    for array in (output.values() if isinstance(output, dict) else [output]):
                        writer(utt.utt_id, np.asarray(array, dtype=np.float32))
            spent["write"] += time.thread_time() - start
        parts = {name: min(parts[name], spent[name]) for name in parts}

    def forward_all(items):
        with torch.inference_mode():
            for item in items:
                extractor.forward([item])

    def two_at_once():
        threads = [threading.Thread(target=forward_all, args=(prepared[k::2],))
                   for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    walls = {}
    cores = os.cpu_count()
    for name, threads, run in (("forward, one pass at a time, torch default threads",
                                cores, lambda: forward_all(prepared)),
                               ("forward, two single-threaded passes at once", 1, two_at_once)):
        torch.set_num_threads(threads)
        walls[name] = min(wall_seconds(run)[1] for _ in range(args.repeat))
    torch.set_num_threads(1)
    audio = sum(len(read_samples(u)[0]) / read_samples(u)[1] for u in utterances)
    loaders = parts["decode"] + parts["resample"] + parts["prepare"]
    print(f"{args.toolkit} on {len(utterances)} utterances, {audio:.0f} s of audio; {cores} "
          f"cores; best of {args.repeat}")
    print("| part | seconds | share of the job's CPU work |")
    print("|---|---|---|")
    total = sum(parts.values())
    for name, seconds in parts.items():
        print(f"| {name} (CPU s, one thread) | {seconds:.2f} | {100 * seconds / total:.1f} % |")
    for name, seconds in walls.items():
        print(f"| {name} (wall s) | {seconds:.2f} | |")
    print(f"loaders' work {loaders:.2f} CPU s; forward {parts['forward, 1 thread']:.2f} CPU s; "
          f"on {cores} cores a job is bounded below by "
          f"{(loaders + parts['forward, 1 thread'] + parts['write']) / cores:.2f} s")
    flops = forward_flops(extractor, prepared)
    print(f"forward: {flops / 1e9:.1f} GFLOP ({flops / 1e9 / audio:.2f} GFLOP per second of "
          "audio, torch.utils.flop_counter)")
    print("| layout | forward wall s | achieved GFLOP/s | peak GFLOP/s (torch.mm 4096, same "
          "threads) | share of peak |")
    print("|---|---|---|---|---|")
    for (name, seconds), threads in zip(walls.items(), (cores, 1)):
        peak = peak_flops(cores, threads, args.repeat)
        print(f"| {name} | {seconds:.2f} | {flops / seconds / 1e9:.0f} | {peak / 1e9:.0f} | "
              f"{100 * flops / seconds / peak:.0f} % |")


def forward_flops(extractor, prepared) -> float:
    """Floating-point operations of every forward pass (matrix products, convolutions and
    attention, as torch's flop counter counts them: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if cpu_attention not in torch.utils.flop_counter.flop_registry:
        # torch counts its GPU attention kernels only: the CPU one does the same products
        @register_flop_formula(cpu_attention)
        def _(query_shape, key_shape, value_shape, *args, **kwargs):
            return sdpa_flop_count(query_shape, key_shape, value_shape)

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        for item in prepared:
            extractor.forward([item])
    return float(counter.get_total_flops())


def peak_flops(cores: int, threads: int, repeat: int, n: int = 4096) -> float:
    """The machine's measured peak: FLOP/s of n x n float32 products, on ``cores`` cores as
    ``cores // threads`` products at once of ``threads`` torch threads each (the layout's)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.set_num_threads(threads)
    passes = cores // threads

    def products():
        workers = [threading.Thread(target=lambda: a @ b) for _ in range(passes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    products()
    best = min(wall_seconds(products)[1] for _ in range(max(repeat, 3)))
    return passes * 2 * n ** 3 / best


if __name__ == "__main__":
    main()
