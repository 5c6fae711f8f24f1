#!/usr/bin/env python3
"""One extraction job: the utterances of a wav.scp (or segments) through an extractor into
<split_dir>/<tag>[_<stream>].<job>.{ark,scp}, utt2dur.<job>, bad_utts.<job>, done.<job>."""

import argparse
import logging
import os
import resource
import sys

import torch
from threadpoolctl import threadpool_limits

from speechdump import engine
from speechdump.audio import UtteranceError
from speechdump.data import read_utterances
from speechdump.device import describe_device
from speechdump.extractors import available, load_extractor
from speechdump.job import is_done, run_job
from speechdump.storage import WriteError

# Options that change only speed, never the output: a rerun with other values skips done jobs.
SPEED_ONLY = ("batch_seconds", "batch_size", "num_workers", "num_threads", "sort_window",
              "sort_window_seconds", "device", "wav_scp", "segments", "split_dir", "job")
# Extractor options, passed to the chosen extractor only when given.
EXTRACTOR_OPTIONS = {
    "layers": str, "pool": str, "window_seconds": float, "hop_seconds": float,
    "num_mel_bins": int, "num_ceps": int, "frame_length": float, "frame_shift": float,
    "dither": float,
}


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--toolkit", default="resemblyzer", choices=available())
    p.add_argument("--model", default="", help="local model path (toolkit's own layout)")
    p.add_argument("--tag", required=True, help="output file stem")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="storage type of the arrays")
    p.add_argument("--compress", type=str2bool, default=False,
                   help="Kaldi-compress float32 matrices (lossy, as copy-feats --compress)")
    p.add_argument("--batch_seconds", type=float, default=60.0,
                   help="upper bound on the padded audio seconds in one forward pass")
    p.add_argument("--batch_size", type=int, default=64, help="upper bound on utterances per batch")
    p.add_argument("--num_workers", type=int, default=2, help="loader threads")
    p.add_argument("--sort_window", type=int, default=128,
                   help="utterances sorted by length together (bounds memory and write latency)")
    p.add_argument("--sort_window_seconds", type=float, default=600.0,
                   help="and at most this many seconds of audio (bounds memory for long audio)")
    p.add_argument("--num_threads", type=int, default=1,
                   help="compute threads of this job (torch and numpy's BLAS)")
    p.add_argument("--skip_bad", type=str2bool, default=False,
                   help="list bad utterances in bad_utts.<job> and go on")
    p.add_argument("--segments", default=None, help="segments file over wav_scp's recordings")
    for name, kind in EXTRACTOR_OPTIONS.items():
        p.add_argument(f"--{name}", type=kind, default=None, help="extractor option")
    p.add_argument("wav_scp")
    p.add_argument("split_dir")
    p.add_argument("job", type=int)
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.num_threads)
    # numpy's BLAS would otherwise start a thread per core in every loader thread, and those
    # spin against the model's threads.
    threadpool_limits(args.num_threads)
    # oneDNN keeps a compiled kernel per input shape, 1024 by default; with utterances of every
    # length, the models' convolutions would fill it and a job's memory grow with its corpus.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

    utterances = read_utterances(args.wav_scp, args.segments)
    config = {k: v for k, v in vars(args).items() if k not in SPEED_ONLY}
    if is_done(args.split_dir, args.job, utterances, config):
        logging.info("job %d is complete (%d utterances): nothing to do", args.job, len(utterances))
        return 0
    extractor_options = {k: getattr(args, k) for k in EXTRACTOR_OPTIONS
                         if getattr(args, k) is not None}
    try:
        device = describe_device(args.device)
        extractor = load_extractor(args.toolkit, args.model, args.device, **extractor_options)
    except (TypeError, ValueError) as exc:
        print(f"ERROR: {args.toolkit}: {exc}", file=sys.stderr)
        return 1
    logging.info("%s on %s, %d compute thread(s), %d loader thread(s)", args.toolkit, device,
                 args.num_threads, args.num_workers)
    options = engine.EngineOptions(batch_seconds=args.batch_seconds, batch_size=args.batch_size,
                                   num_workers=args.num_workers, sort_window=args.sort_window,
                                   sort_window_seconds=args.sort_window_seconds,
                                   skip_bad=args.skip_bad)
    try:
        stats = run_job(utterances, extractor, args.tag, args.split_dir, args.job, options,
                        dtype=args.dtype, compress=args.compress, config=config)
    except UtteranceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except WriteError as exc:  # disk full, file size limit: the user needs the file, not a trace
        print(f"ERROR: job {args.job}: {exc}", file=sys.stderr)
        return 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    logging.info("%d utterances, %.1f s of audio in %.1f s; %d bad; peak memory %.0f MiB",
                 stats.done, stats.audio_seconds, stats.wall_seconds, len(stats.bad), peak_mib)
    for utt_id, reason in stats.bad:
        logging.warning("skipped bad utterance %s: %s", utt_id, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
