#!/usr/bin/env python3
"""Lhotse manifests over a data dir and stage outputs (speechdump.lhotse_export).

  export_lhotse.py [--features STEM] [--prefix P] [--tables DIR] <data_dir> <manifest_dir>
                   <stage_out_dir>...

writes <manifest_dir>/<P>recordings.jsonl.gz, <P>supervisions.jsonl.gz and <P>cuts.jsonl.gz:
one cut per utterance of the first stage output (in its order: the data dir's text), its
features (the first frame-level float stream, or --features STEM) read by Lhotse from our
arks, every other stream a custom field named as its scp stem, and with --tables DIR each
DIR/utt2<name> (e.g. scripts/compute_quality.sh's tables; not utt2dur, utt2spk) the custom
field <name> (a float where it parses as one). Nothing is copied.
Load with:  import speechdump.lhotse_export; CutSet.from_file(".../cuts.jsonl.gz")
"""

import argparse
import sys

from speechdump import cli
from speechdump.lhotse_export import export


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default=None,
                   help="the scp stem of the stream attached as cut.features")
    p.add_argument("--prefix", default="", help="manifest file name prefix, e.g. train_")
    p.add_argument("--tables", default=None, metavar="DIR",
                   help="a directory of utt2<name> tables, each added as custom field <name>")
    p.add_argument("data_dir")
    p.add_argument("manifest_dir")
    p.add_argument("out_dirs", nargs="+", metavar="stage_out_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    paths = export(args.data_dir, args.out_dirs, args.manifest_dir, features=args.features,
                   prefix=args.prefix, tables=args.tables)
    print(" ".join(paths[name] for name in ("recordings", "supervisions", "cuts")))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
