#!/usr/bin/env python3
"""Writes an scp (a stage's merged tokens or frame features) as indexed shards.

  write_shards.py [--shard_size N] [--vocab_size K] [--kind auto|tokens|frames]
                  [--float_dtype float16|float32] <scp> <out_prefix>

writes <out_prefix>.json (the header), <out_prefix>.00000.bin/.idx, ... (speechdump.shards),
the utterances in the order of <scp> (a stage's scp follows its data dir's text). The stream's
kind, frame shift and the producing stage's config fingerprint come from the meta.json beside
<scp>; the vocabulary size from --vocab_size, else the stage's n_clusters, else the largest
token + 1 (a first pass over the scp). Prints the header's path.
"""

import argparse
import sys

from speechdump import cli
from speechdump.errors import ShardError
from speechdump.extractors.base import FLOAT, INT
from speechdump.job import merged_stream
from speechdump.kaldi_io import read_scp_arrays
from speechdump.shards import FRAMES, TOKENS, header_path, stage_record, write_shards


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shard_size", type=int, default=100000, help="utterances per shard")
    p.add_argument("--vocab_size", type=int, default=None,
                   help="tokens are in [0, K); default: the stage's n_clusters, else max + 1")
    p.add_argument("--kind", choices=["auto", TOKENS, FRAMES], default="auto",
                   help="auto: from the stream in meta.json (int: tokens, float: frames)")
    p.add_argument("--float_dtype", choices=["float16", "float32"], default="float32",
                   help="storage type of frame features")
    p.add_argument("scp")
    p.add_argument("out_prefix")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    meta = stage_record(args.scp)
    stream = merged_stream(args.scp)
    kind = args.kind
    if kind == "auto":
        if stream is None:
            raise ShardError(f"{args.scp}: no stage record (meta.json) says what it holds: "
                             f"give --kind tokens or --kind frames")
        kind = TOKENS if stream.kind == INT else FRAMES if stream.kind == FLOAT else None
        if kind == FRAMES and not stream.frame_level:
            raise ShardError(f"{args.scp}: holds one vector per utterance, not frames: shards "
                             f"are for tokens and frame features")
    vocab_size = args.vocab_size
    if kind == TOKENS and vocab_size is None:
        vocab_size = meta.get("config", {}).get("n_clusters")
        if vocab_size is None:
            vocab_size = 1 + max((int(a.max()) for _, a in read_scp_arrays(args.scp) if a.size),
                                 default=0)
    header = write_shards(read_scp_arrays(args.scp), args.out_prefix, kind, args.shard_size,
                          vocab_size=vocab_size, float_dtype=args.float_dtype, meta=meta,
                          frame_shift=stream.frame_shift if stream is not None else None,
                          source=args.scp)
    print(f"{header_path(args.out_prefix)}: {header['num_utterances']} utterances in "
          f"{len(header['shards'])} shards of {header['dtype']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
