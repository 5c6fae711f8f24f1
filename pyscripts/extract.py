#!/usr/bin/env python3
"""One extraction job: the utterances of a wav.scp (or segments) through an extractor into
<split_dir>/<tag>[_<stream>].<job>.{ark,scp}, utt2dur.<job>, bad_utts.<job>, done.<job>.

The options after the general ones are the chosen toolkit's own: `--toolkit X --help` lists
them."""

import argparse
import logging
import os
import resource
import sys

import torch
from threadpoolctl import threadpool_limits

from speechdump import cli, engine, precision, vad
from speechdump.data import read_utterances, write_table
from speechdump.device import cpu_layout, describe_device, job_cpus
from speechdump.errors import WriteError
from speechdump.extractors import check, get_class, load_extractor
from speechdump.extractors.base import check_storage
from speechdump.job import redo_reason, run_job
from speechdump.provenance import (digest, input_lines, model_fingerprint, model_identity,
                                   read_fingerprint, sources_path, unfingerprinted, versions)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    cli.add_general_options(p)
    vad.add_trim_options(p)
    p.add_argument("--tag", required=True, help="output file stem")
    p.add_argument("--batch_seconds", type=float, default=60.0,
                   help="upper bound on the padded audio seconds in one forward pass")
    p.add_argument("--batch_size", type=int, default=64, help="upper bound on utterances per batch")
    p.add_argument("--num_workers", type=int, default=2, help="loader threads")
    p.add_argument("--sort_window", type=int, default=128,
                   help="utterances sorted by length together (bounds memory and write latency)")
    p.add_argument("--sort_window_seconds", type=float, default=600.0,
                   help="and at most this many seconds of audio (bounds memory for long audio)")
    p.add_argument("--num_threads", type=int, default=0,
                   help="the CPU cores this job computes on; 0: the CPUs it was given (Slurm's "
                        "allocation, else its CPU affinity), spent as --cpu_layout says")
    p.add_argument("--skip_bad", type=cli.str2bool, default=False,
                   help="list bad utterances in bad_utts.<job> and go on")
    p.add_argument("--segments", default=None, help="segments file over wav_scp's recordings")
    p.add_argument("--model_fingerprint", default=None, metavar="FILE",
                   help="the model's fingerprint as the stage computed it (check_extraction.py "
                        "--fingerprint_to): files whose size and time still match are not "
                        "hashed again")
    p.add_argument("wav_scp")
    p.add_argument("split_dir")
    p.add_argument("job", type=int)
    return p


def main(argv=None) -> int:
    args, given = cli.parse_extraction_args(get_parser(), argv)
    trim = vad.trim_settings(args)  # None unless --vad true
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.num_threads <= 0:
        args.num_threads = job_cpus()
        logging.info("--num_threads %d: one per CPU this job was given", args.num_threads)
    cls = get_class(args.toolkit)
    layout, workers, torch_threads = cpu_layout(args.cpu_layout, args.device, cls,
                                                args.num_threads)
    torch.set_num_threads(torch_threads)
    # numpy's BLAS would otherwise start a thread per core in every loader thread, and those
    # spin against the model's threads.
    threadpool_limits(torch_threads)
    # oneDNN keeps a compiled kernel per input shape, 1024 by default; with utterances of every
    # length, the models' convolutions would fill it and a job's memory grow with its corpus.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

    values, streams = check(args.toolkit, args.model, given)
    check_storage(streams, args.dtype, args.compress)
    vad.check_trim(trim, streams, args.toolkit)
    precision.check(args.precision, args.device, streams, args.toolkit)
    utterances = read_utterances(args.wav_scp, args.segments)
    fingerprint = model_fingerprint(cls.model_files(args.model),
                                    read_fingerprint(args.model_fingerprint))
    # What determines the output: a rerun with anything else here redoes the job.
    config = {"toolkit": args.toolkit, "model_path": args.model, "tag": args.tag,
              "dtype": args.dtype, "compress": args.compress, "precision": args.precision,
              "options": values, "model": model_identity(fingerprint),
              # The rounding of the floats follows the layout, and intra_op's the thread count.
              "cpu_layout": layout if layout != "intra_op" else f"intra_op/{torch_threads}",
              "versions": versions(cls.packages)}
    if cls.revision > 1:
        config["revision"] = cls.revision
    if trim is not None:  # absent without --vad true: the records of jobs without it stand
        config["vad"] = vad.trim_record(trim)
    lines = input_lines(utterances)
    inputs = {"utterances": len(lines), "sha1": digest(lines)}
    blind = unfingerprinted(lines)
    if blind:  # the merge names them on the console
        inputs["unfingerprinted"] = {"count": len(blind), "first": blind[0]}
    # --skip_bad changes the output of a job only where it skipped bad utterances: a job that
    # found none is reused either way, and one that failed on one has no record to reuse.
    why = redo_reason(args.split_dir, args.job, utterances, config, inputs, lines,
                      skip_bad=args.skip_bad)
    if why is None:
        logging.info("job %d is complete (%d utterances) and nothing it depends on changed: "
                     "nothing to do", args.job, len(utterances))
        return 0
    logging.info("job %d runs: %s", args.job, why)
    os.makedirs(args.split_dir, exist_ok=True)
    write_table(sources_path(args.split_dir, args.job), lines)
    device = describe_device(args.device)
    extractor = load_extractor(args.toolkit, args.model, args.device, **values)
    precision.configure(args.precision, args.device)  # after the load: SpeechBrain sets TF32
    logging.info("%s on %s at --precision %s, %d core(s), --cpu_layout %s: %d forward pass(es) "
                 "at once, %d torch thread(s) each; %d loader thread(s)", args.toolkit, device,
                 args.precision, args.num_threads, layout, workers, torch_threads,
                 args.num_workers)
    options = engine.EngineOptions(batch_seconds=args.batch_seconds, batch_size=args.batch_size,
                                   num_workers=args.num_workers, compute_workers=workers,
                                   sort_window=args.sort_window,
                                   sort_window_seconds=args.sort_window_seconds,
                                   skip_bad=args.skip_bad, channel=values["channel"],
                                   max_overshoot=values["max_overshoot"],
                                   precision=args.precision, device=args.device,
                                   trim=vad.SpeechTrimmer(trim) if trim is not None else None)
    if trim is not None:
        logging.info("--vad true: each utterance cut to its speech regions (Silero VAD, %s), "
                     "concatenated, before %s", vad.describe_settings(trim), args.toolkit)
    try:
        stats = run_job(utterances, extractor, args.tag, args.split_dir, args.job, options,
                        dtype=args.dtype, compress=args.compress, config=config, input=inputs,
                        why=why)
    except WriteError as exc:  # disk full, file size limit: which job, and the file
        exc.args = (f"job {args.job}: {exc}",)
        raise
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    logging.info("%d utterances, %.1f s of audio in %.1f s; %d bad; %.1f MB read; peak memory "
                 "%.0f MiB", stats.done, stats.audio_seconds, stats.wall_seconds, len(stats.bad),
                 stats.bytes_read / 1e6, peak_mib)
    if trim is not None:
        removed = stats.audio_seconds - stats.kept_seconds
        logging.info("--vad true: %.1f s of audio before trimming, %.1f s of speech after: "
                     "%.1f s (%.1f%%) removed", stats.audio_seconds, stats.kept_seconds, removed,
                     100 * removed / stats.audio_seconds if stats.audio_seconds else 0.0)
    for utt_id, reason in stats.bad:
        logging.warning("skipped bad utterance %s: %s", utt_id, reason)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
