#!/usr/bin/env python3
"""The last step of scripts/compute_quality.sh: the merged quality vectors (<out_dir>/<tag>.scp,
float32 [dur, speech_ratio, level_dbfs, clip_ratio, snr_db] per utterance) into the Kaldi tables
<out_dir>/utt2<field>, one per measure, in the scp's order (speechdump.quality). Prints a
summary of each."""

import argparse
import os
import sys

import numpy as np

from speechdump import cli
from speechdump.data import write_table
from speechdump.errors import DataDirError
from speechdump.kaldi_io import read_scp_arrays
from speechdump.quality import FIELDS, table_lines


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", default="measures", help="stem of the merged vectors' scp")
    p.add_argument("out_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    scp = os.path.join(args.out_dir, f"{args.tag}.scp")
    if not os.path.isfile(scp):
        raise DataDirError(f"{scp} is missing: the extraction did not finish")
    vectors = {utt: np.array(v, dtype=np.float32).reshape(-1) for utt, v in read_scp_arrays(scp)}
    for utt, v in vectors.items():
        if len(v) != len(FIELDS):
            raise DataDirError(f"{scp}: '{utt}' holds {len(v)} values, not {len(FIELDS)} "
                               f"({' '.join(FIELDS)})")
    for field in FIELDS:
        write_table(os.path.join(args.out_dir, f"utt2{field}"), table_lines(vectors, field))
    if vectors:
        m = np.stack(list(vectors.values()))
        summary = ", ".join(f"{f} {np.min(m[:, i]):.4g}..{np.median(m[:, i]):.4g}.."
                            f"{np.max(m[:, i]):.4g}" for i, f in enumerate(FIELDS))
        print(f"{len(vectors)} utterances (min..median..max): {summary}")
    print(f"tables: {' '.join(os.path.join(args.out_dir, 'utt2' + f) for f in FIELDS)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
