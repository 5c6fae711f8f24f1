#!/usr/bin/env python3
"""The utterances of each job of a stage (speechdump.split): contiguous parts of about equal
audio, a shard's utterances in one job, in the order they lie there.

  split_jobs.py [--utt2dur F] [--wav_scp F] <list> <out.1> ... <out.N>

<list>: wav.scp lines, or segments lines over the recordings of --wav_scp. Prints what it did."""

import argparse
import sys

from speechdump import cli
from speechdump.data import read_table
from speechdump.split import plan


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utt2dur", default=None, help="balance the jobs by these durations")
    p.add_argument("--wav_scp", default=None,
                   help="the recordings, when <list> is a segments file")
    p.add_argument("list")
    p.add_argument("outputs", nargs="+", metavar="out")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    with open(args.list, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    result = plan(lines, len(args.outputs),
                  utt2dur=read_table(args.utt2dur) if args.utt2dur else None,
                  recordings=read_table(args.wav_scp) if args.wav_scp else None)
    for path, part in zip(args.outputs, result.parts):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line if line.endswith("\n") else line + "\n" for line in part)
    if result.shards:
        how = ("fewer shards than jobs: shards are cut between jobs, each part read in order"
               if result.shards_cut else "each shard is read by one job, in order")
        print(f"{len(lines)} utterances in {result.shards} shards over {len(args.outputs)} "
              f"jobs: {how}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
