#!/usr/bin/env python3
"""Engine throughput against a per-utterance sequential loop with the same model.

The sequential loop is how a plain extraction script works: for each utterance, decode it,
resample it, run the model on it alone, keep the vector. The engine decodes and resamples in
loader threads ahead of the model and runs length-sorted batches. Both run in this process,
one after the other, on the real speech samples repeated to about ``--minutes`` of audio, and
the ratio of their throughputs (audio seconds per wall second) is printed.

    tools/venv/bin/python bench/engine.py --toolkits resemblyzer,speechbrain --minutes 10
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests

from speechdump import engine  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402
from sample_corpus import corpus  # noqa: E402  (bench/: the samples repeated)


def sequential_resemblyzer(device):
    """The loop over utterances, its model loaded (untimed, as the engine's extractor is)."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder(device=device, verbose=False)

    def loop(utterances):
        out = {}
        for utt in utterances:
            samples, rate = soundfile.read(utt.source, dtype="float32", always_2d=True)
            out[utt.utt_id] = encoder.embed_utterance(preprocess_wav(samples.mean(axis=1), rate))
        return out
    return loop


def sequential_speechbrain(device, model):
    """The loop over utterances, its model loaded (untimed, as the engine's extractor is)."""
    from speechbrain.inference.speaker import EncoderClassifier

    classifier = EncoderClassifier.from_hparams(source=model, savedir=None,
                                                run_opts={"device": device})

    def loop(utterances):
        out = {}
        for utt in utterances:
            samples, rate = soundfile.read(utt.source, dtype="float32", always_2d=True)
            wave = torch.from_numpy(samples.mean(axis=1))
            wave = torchaudio.functional.resample(wave, rate, 16000)
            with torch.inference_mode():
                out[utt.utt_id] = (classifier.encode_batch(wave[None].to(device))
                                   .squeeze().cpu().numpy())
        return out
    return loop


def build_speechbrain_ecapa(dest):
    from build_speechbrain_model import build

    return build(dest, kind="ecapa", channels=[1024, 1024, 1024, 1024, 3072])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--toolkits", default="resemblyzer,speechbrain")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_seconds", type=float, default=120.0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads, the same for both loops")
    p.add_argument("--warm_up_all", action="store_true",
                   help="run both loops untimed over the whole corpus first (default: 3 "
                        "utterances); on a GPU each new input shape costs a kernel choice")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    utterances = corpus(args.minutes)
    print(f"corpus: {len(utterances)} utterances (real speech samples repeated), device "
          f"{args.device}, torch threads {args.threads}, {os.cpu_count()} cores, engine "
          f"batch_seconds {args.batch_seconds} batch_size {args.batch_size} "
          f"num_workers {args.num_workers}")
    with tempfile.TemporaryDirectory() as tmp:
        for toolkit in args.toolkits.split(","):
            model = (build_speechbrain_ecapa(Path(tmp) / "ecapa")
                     if toolkit == "speechbrain" else None)
            extractor = load_extractor(toolkit, str(model) if model else None, args.device)
            if toolkit == "speechbrain":
                sequential = sequential_speechbrain(args.device, str(model))
            else:
                sequential = sequential_resemblyzer(args.device)
            batched = {}
            options = engine.EngineOptions(batch_seconds=args.batch_seconds,
                                           batch_size=args.batch_size,
                                           num_workers=args.num_workers, progress=False)
            # One-time costs (JIT, kernel choices per input shape) stay untimed.
            warm_up = utterances if args.warm_up_all else utterances[:3]
            sequential(warm_up)
            engine.run(warm_up, extractor, lambda *_: None, options)
            stats, engine_wall = timed(lambda: engine.run(utterances, extractor,
                                                          batched.__setitem__, options))
            reference, seq_wall = timed(lambda: sequential(utterances))
            audio = stats.audio_seconds
            worst = min(float(batched[u] @ reference[u] / np.linalg.norm(batched[u])
                              / np.linalg.norm(reference[u])) for u in reference)
            print(f"{toolkit}: {audio:.0f} s of audio | sequential {seq_wall:.1f} s "
                  f"({audio / seq_wall:.1f} s/s) | engine {engine_wall:.1f} s "
                  f"({audio / engine_wall:.1f} s/s) | speed-up {seq_wall / engine_wall:.2f}x "
                  f"| lowest cosine engine vs sequential {worst:.5f}")


if __name__ == "__main__":
    main()
