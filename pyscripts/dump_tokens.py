#!/usr/bin/env python3
"""Discrete tokens of features: the nearest k-means center of every frame.

  dump_tokens.py check <feats_scp> <km_dir>
      pre-flight of the stage, before any job: the model is complete, the features are
      frame-level floats of its dimension; prints their frame shift in seconds (from the
      feature stage's meta.json beside the scp; "none" where unknown) for the jobs.
  dump_tokens.py job [opts] <km_dir> <feats_part_scp> <split_dir> <job>
      one job, written as every stage's job is (speechdump.job.JobWriter):
      <split_dir>/tokens.<job>.{ark,scp} (int32 vectors; the scp appears only once the job is
      complete), utt2num_frames.<job>, bad_utts.<job> and done.<job>, its record. A rerun skips
      a job done with the same centers over the same feature entries and arks. With --dedup
      true, runs of a repeated token collapse into one unit: tokens.<job> holds the units and
      tokens_durations.<job> the frames of each (np.repeat(units, durations) gives the frames
      back); utt2num_frames then counts units.
The merge is pyscripts/merge_outputs.py --kmeans <km_dir>, as for every stage.
"""

import argparse
import hashlib
import logging
import os
import sys
import time

import numpy as np

from speechdump import cli
from speechdump.errors import TokenError
from speechdump.extractors.base import FLOAT, FRAMES, INT, TOKENS, Stream
from speechdump.job import JobWriter, is_done, merged_stream
from speechdump.kaldi_io import ark_offset
from speechdump.tokens import (KMeansModel, assign_utterances, feature_table, iter_features,
                               load_matrix, load_model)

TAG = "tokens"


def job_config(model: KMeansModel, dedup: bool = False) -> dict:
    """What determines every job's output, the same for all jobs of the stage."""
    config = {"centers_sha1": model.settings["centers_sha1"], "n_clusters": model.n_clusters}
    return dict(config, dedup=True) if dedup else config


def job_input(table: dict) -> dict:
    """What determines this job's output beyond the config: its ids, their entries, and the
    identity (size, modification time) of the arks they point into, so that re-extracted
    features are tokenised again."""
    lines = "\n".join(f"{key} {location}" for key, location in table.items())
    arks = {}
    for location in table.values():
        parts = ark_offset(location)
        ark = parts[0] if parts else location
        if ark not in arks:
            try:
                stat = os.stat(ark)
                arks[ark] = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                arks[ark] = None  # a pipe, or a missing ark: the read says which
    return {"num_utts": len(table),
            "keys_sha1": hashlib.sha1("\n".join(table).encode("utf-8")).hexdigest(),
            "entries_sha1": hashlib.sha1(lines.encode("utf-8")).hexdigest(),
            "arks": sorted([ark, identity] for ark, identity in arks.items())}


def check(args) -> None:
    model = load_model(args.km_dir)
    table = feature_table(args.feats_scp)
    stream = merged_stream(args.feats_scp)
    if stream is not None and (stream.kind != FLOAT or stream.shape != FRAMES):
        raise TokenError(f"{args.feats_scp} holds {stream.kind} {stream.shape} "
                         "(its meta.json says so): k-means tokens need frame-level float "
                         "features")
    key, location = next(iter(table.items()))
    dim = load_matrix(args.feats_scp, key, location).shape[1]
    if dim != model.dim:
        raise TokenError(f"{args.feats_scp}: '{key}' has dimension {dim}, the centers in "
                         f"{args.km_dir} have {model.dim}")
    print(stream.frame_shift if stream is not None and stream.frame_shift else "none")


def run_job(args) -> None:
    model = load_model(args.km_dir)
    table = feature_table(args.feats_scp)
    dedup = args.dedup == "true"
    config, inputs = job_config(model, dedup), job_input(table)
    if is_done(args.split_dir, args.job, list(table), config, inputs):
        logging.info("job %d is complete (%d utterances): nothing to do", args.job, len(table))
        return
    import torch  # only a job with work to do pays for it

    from speechdump.device import describe_device
    from speechdump.extractors.codec import dedup_frames  # the codec toolkit's, the same runs

    torch.set_num_threads(args.num_threads)
    device = describe_device(args.device)
    # Units of varying length have no frame shift.
    stream = Stream(kind=INT, shape=TOKENS, frame_shift=None if dedup else args.frame_shift)
    streams = [(stream.stem(TAG), stream)]
    if dedup:
        durations = Stream("durations", kind=INT, shape=TOKENS)
        streams.append((durations.stem(TAG), durations))

    def checked():
        for key, matrix in iter_features(args.feats_scp, table=table):
            if matrix.shape[1] != model.dim:
                raise TokenError(f"{args.feats_scp}: '{key}' has dimension {matrix.shape[1]}, "
                                 f"the centers in {args.km_dir} have {model.dim}")
            if not np.isfinite(matrix).all():
                raise TokenError(f"{args.feats_scp}: '{key}' holds NaN or Inf")
            yield key, matrix

    start, frames = time.time(), 0
    with JobWriter(args.split_dir, args.job, streams, config=config, input=inputs) as out:
        for key, tokens in assign_utterances(checked(), model.centers, args.device,
                                             args.batch_frames):
            if dedup:
                units, counts = dedup_frames(np.asarray(tokens))
                out.write(key, {"": units, "durations": counts})
            else:
                out.write(key, tokens)
            frames += len(tokens)
        out.finish(frames=frames)
    wall = time.time() - start
    logging.info("job %d: %d utterances, %d frames in %.1f s (%.0f frames/s) on %s", args.job,
                 len(table), frames, wall, frames / max(wall, 1e-9), device)


def seconds_or_none(value: str):
    """A frame shift on the command line: seconds (positive), or ``none``."""
    if value == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected positive seconds or none, got '{value}'")
    return seconds


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="pre-flight of the stage; prints the frame shift")
    c.add_argument("feats_scp")
    c.add_argument("km_dir")
    j = sub.add_parser("job", help="tokens of one part of a feats.scp")
    j.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    j.add_argument("--batch_frames", type=int, default=65536,
                   help="frames (of many utterances) per distance matmul")
    j.add_argument("--num_threads", type=int, default=1, help="torch threads of this job")
    j.add_argument("--frame_shift", type=seconds_or_none, default=None,
                   help="seconds between the features' frames, recorded with the tokens "
                        "(none: unknown)")
    j.add_argument("--dedup", choices=["true", "false"], default="false",
                   help="collapse runs of a repeated token into units, with their durations")
    j.add_argument("km_dir")
    j.add_argument("feats_scp")
    j.add_argument("split_dir")
    j.add_argument("job", type=int)
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "check":
        check(args)
        return 0
    if args.batch_frames < 1:
        raise TokenError("--batch_frames must be positive")
    run_job(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
