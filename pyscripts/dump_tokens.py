#!/usr/bin/env python3
"""Discrete tokens of features: nearest k-means center of every frame.

  dump_tokens.py job [opts] <km_dir> <feats_part_scp> <split_dir> <job>
      one job: <split_dir>/tokens.<job>.{ark,scp} (int32 vectors; the scp appears only once the
      job is complete), tokens.<job>.txt (Kaldi text) and tokens.<job>.json (what it covered).
  dump_tokens.py merge [opts] <feats_scp> <km_dir> <split_dir> <out_dir>
      <out_dir>/tokens, tokens.scp and utt2num_frames in the order of feats_scp, checked;
      prints the summary.
"""

import argparse
import hashlib
import json
import logging
import os
import sys
import time

import numpy as np

from speechdump.align import AlignmentError, align, merge_scps, require_complete
from speechdump.data import atomic_path, write_table
from speechdump.device import describe_device
from speechdump.storage import ArkScpWriter
from speechdump.tokens import (TokenError, assign_utterances, check_tokens, iter_features,
                               load_model, num_frames, read_scp_table, usage_stats)


def part_names(split_dir: str, job: int) -> dict:
    stem = os.path.join(split_dir, f"tokens.{job}")
    return {"ark": stem + ".ark", "scp": stem + ".scp", "txt": stem + ".txt",
            "info": stem + ".json"}


def keys_digest(keys) -> str:
    return hashlib.sha1("\n".join(keys).encode("utf-8")).hexdigest()


def read_info(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_job(args) -> None:
    model = load_model(args.km_dir)
    table = read_scp_table(args.feats_scp)
    keys = list(table)
    names = part_names(args.split_dir, args.job)
    wanted = {"centers_sha1": model.settings["centers_sha1"], "num_utts": len(keys),
              "keys_sha1": keys_digest(keys)}
    if os.path.exists(names["scp"]) and os.path.exists(names["txt"]):
        info = read_info(names["info"])
        if {k: info.get(k) for k in wanted} == wanted:
            logging.info("job %d is complete (%d utterances): nothing to do", args.job, len(keys))
            return
    import torch  # only a job with work to do pays for it

    torch.set_num_threads(args.num_threads)
    try:
        device = describe_device(args.device)
    except ValueError as exc:
        raise TokenError(str(exc)) from None
    for stale in (names["scp"], names["info"], names["txt"]):
        if os.path.exists(stale):
            os.remove(stale)

    def checked():
        for key, matrix in iter_features(args.feats_scp, keys):
            if matrix.shape[1] != model.dim:
                raise TokenError(f"{args.feats_scp}: '{key}' has dimension {matrix.shape[1]}, "
                                 f"the centers in {args.km_dir} have {model.dim}")
            if not np.isfinite(matrix).all():
                raise TokenError(f"{args.feats_scp}: '{key}' holds NaN or Inf")
            yield key, matrix

    start, frames = time.time(), 0
    txt_tmp = names["txt"] + ".partial"
    writer = ArkScpWriter(names["ark"], names["scp"])
    try:
        with open(txt_tmp, "w", encoding="utf-8") as txt:
            for key, tokens in assign_utterances(checked(), model.centers, args.device,
                                                 args.batch_frames):
                writer.write(key, tokens.astype(np.int32, copy=False))
                txt.write(" ".join([key, *map(str, tokens.tolist())]) + "\n")
                frames += len(tokens)
        if writer.count != len(keys):
            raise TokenError(f"{args.feats_scp}: {writer.count} of {len(keys)} utterances done")
        os.replace(txt_tmp, names["txt"])
        with open(names["info"], "w", encoding="utf-8") as f:
            json.dump(dict(wanted, num_frames=frames, feats_scp=args.feats_scp), f)
    except BaseException:
        writer.abort()
        if os.path.exists(txt_tmp):
            os.remove(txt_tmp)
        raise
    writer.commit()  # the scp appears last: the job is complete
    wall = time.time() - start
    logging.info("job %d: %d utterances, %d frames in %.1f s (%.0f frames/s) on %s", args.job,
                 len(keys), frames, wall, frames / max(wall, 1e-9), device)


def merge(args) -> None:
    model = load_model(args.km_dir)
    table = read_scp_table(args.feats_scp)
    reference = list(table)
    parts = [part_names(args.split_dir, job) for job in range(1, args.nj + 1)]
    unfinished = [str(job) for job, p in enumerate(parts, 1) if not os.path.exists(p["scp"])]
    if unfinished:
        raise TokenError(f"jobs {', '.join(unfinished)} of {args.nj} did not finish "
                         f"(no tokens.<job>.scp in {args.split_dir})")
    for p in parts:
        if read_info(p["info"]).get("centers_sha1") != model.settings["centers_sha1"]:
            raise TokenError(f"{p['scp']} was not made with the centers of {args.km_dir}")
    alignment = align(merge_scps(p["scp"] for p in parts), reference)
    require_complete(alignment)
    if alignment.dropped:
        raise TokenError(f"tokens for ids not in {args.feats_scp}: "
                         f"{' '.join(alignment.dropped[:20])}")
    lines = {}
    for p in parts:
        with open(p["txt"], encoding="utf-8") as f:
            for line in f:
                lines[line.split(" ", 1)[0].rstrip("\n")] = line.rstrip("\n")
    frames = {key: num_frames(table[key]) for key in reference}

    out_scp = os.path.join(args.out_dir, "tokens.scp")
    out_txt = os.path.join(args.out_dir, "tokens")
    write_table(out_scp, alignment.entries)
    missing = [key for key in reference if key not in lines]
    if missing:
        raise TokenError(f"'{missing[0]}' is in the job scps but not in their text parts "
                         f"(tokens.<job>.txt in {args.split_dir})")
    with atomic_path(out_txt) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key in reference:
            f.write(lines[key] + "\n")
    try:
        counts = check_tokens(out_scp, out_txt, reference, frames, model.n_clusters)
    except BaseException:
        for path in (out_scp, out_txt):
            os.remove(path)
        raise
    write_table(os.path.join(args.out_dir, "utt2num_frames"),
                ((key, str(frames[key])) for key in reference))

    total = int(counts.sum())
    runs = 0
    with open(out_txt, encoding="utf-8") as f:  # segments of repeated tokens (deduplicated units)
        for line in f:
            toks = line.split()[1:]
            runs += sum(1 for i, t in enumerate(toks) if i == 0 or t != toks[i - 1])
    stats = usage_stats(counts)
    wall = time.time() - args.start_time if args.start_time else float("nan")
    print(f"{out_txt} and {out_scp}: {len(reference)} utterances, {total} frames/tokens, "
          f"K={model.n_clusters} (centers of {args.km_dir})")
    print(f"token usage: {stats['used']}/{model.n_clusters} clusters used, entropy "
          f"{stats['entropy_bits']:.3f} bits (max {stats['max_entropy_bits']:.3f}), perplexity "
          f"{stats['perplexity']:.1f}; {runs} tokens after merging repeats "
          f"(mean run {total / max(runs, 1):.2f} frames)")
    print(f"{total} tokens in {wall:.1f} s wall time ({total / wall:.0f} tokens/s)")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    j = sub.add_parser("job", help="tokens of one part of a feats.scp")
    j.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    j.add_argument("--batch_frames", type=int, default=65536,
                   help="frames (of many utterances) per distance matmul")
    j.add_argument("--num_threads", type=int, default=1, help="torch threads of this job")
    j.add_argument("km_dir")
    j.add_argument("feats_scp")
    j.add_argument("split_dir")
    j.add_argument("job", type=int)
    m = sub.add_parser("merge", help="merge and check the jobs")
    m.add_argument("--nj", type=int, required=True)
    m.add_argument("--start_time", type=float, default=None, help="stage start (epoch seconds)")
    m.add_argument("feats_scp")
    m.add_argument("km_dir")
    m.add_argument("split_dir")
    m.add_argument("out_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "job" and args.batch_frames < 1:
        print("ERROR: --batch_frames must be positive", file=sys.stderr)
        return 1
    try:
        run_job(args) if args.command == "job" else merge(args)
    except (TokenError, AlignmentError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
