#!/usr/bin/env python3
"""Stage outputs as shards aligned with the corpus's input shards (speechdump.shard_export).

  export_shards.py --format shar|parquet [--shard_size N] [--features STEM] [--force true]
                   <data_dir> <out_dir> <stage_out_dir>...

One output shard per input shard (the tar or parquet files <data_dir>/wav.scp points into),
holding that shard's utterances in the order they lie in it and numbered as it is
(recording.000003.tar -> <field>.000003.tar); for a data dir of plain files, shards of
--shard_size utterances in id order. Every per-utterance stream of the stage outputs is
exported, arrays as stored, integers kept integers.

  shar:    <out_dir>/cuts.NNNNNN.jsonl.gz and <stem>.NNNNNN.tar per stream (Lhotse Shar);
           load with CutSet.from_shar(in_dir=<out_dir>) or fields=... (any subset of fields)
  parquet: <out_dir>/shard.NNNNNN.parquet: columns id and one per stream (list<...> for
           vectors and tokens, list<list<...>> for frames); load with pyarrow.parquet.read_table

The record (<out_dir>/cuts.speechdump.json, or speechdump.json for parquet) maps each output
shard to its input shard and gives each field's stage config fingerprint. An export over one
made from other configs, or over files no record accounts for, is refused unless --force true.
Prints the record's path and what was written.
"""

import argparse
import os
import sys

from speechdump import cli
from speechdump.shard_export import PARQUET, PARQUET_RECORD, SHAR, SHAR_RECORD, export


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=[SHAR, PARQUET], dest="kind")
    p.add_argument("--shard_size", type=int, default=1000,
                   help="utterances per shard where wav.scp holds plain files (no input shards)")
    p.add_argument("--features", default=None, metavar="STEM",
                   help="shar: the frame-level float stream stored as the cuts' features "
                        "(cut.load_features()); the others are custom fields")
    p.add_argument("--force", type=cli.str2bool, default=False,
                   help="replace an export of other configs, or files no export record lists")
    p.add_argument("data_dir")
    p.add_argument("out_dir")
    p.add_argument("stage_dirs", nargs="+", metavar="stage_out_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    record = export(args.kind, args.data_dir, args.out_dir, args.stage_dirs,
                    shard_size=args.shard_size, features=args.features, force=args.force)
    name = SHAR_RECORD if args.kind == SHAR else PARQUET_RECORD
    aligned = (f"aligned with {len(record['shards'])} input shards" if record["shards"][0]["input"]
               else f"{len(record['shards'])} shards of up to {args.shard_size}")
    print(f"{os.path.join(args.out_dir, name)}: {record['utterances']} utterances, "
          f"{aligned}, fields {', '.join(record['fields'])}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
