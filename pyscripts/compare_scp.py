#!/usr/bin/env python3
"""Compares two scps like Kaldi's compare-feats: same keys in the same order and every array
equal within a tolerance. Prints the largest absolute difference; exits 1 on any mismatch."""

import argparse
import sys

import kaldiio
import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest allowed abs difference")
    p.add_argument("scp_a")
    p.add_argument("scp_b")
    args = p.parse_args(argv)
    a = kaldiio.load_scp_sequential(args.scp_a)
    b = kaldiio.load_scp_sequential(args.scp_b)
    worst, worst_key, count = 0.0, None, 0
    for (key_a, x), (key_b, y) in zip(a, b):
        if key_a != key_b:
            print(f"compare_scp.py: line {count + 1}: '{key_a}' in {args.scp_a} but '{key_b}' "
                  f"in {args.scp_b}", file=sys.stderr)
            return 1
        if np.shape(x) != np.shape(y):
            print(f"compare_scp.py: '{key_a}': shape {np.shape(x)} vs {np.shape(y)}",
                  file=sys.stderr)
            return 1
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        # Equal values (infinities too) and NaN against NaN differ by 0; NaN against a number,
        # by NaN: a mismatch whatever the tolerance.
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        with np.errstate(invalid="ignore"):  # inf - inf where they are equal: masked
            diffs = np.where(same, 0.0, np.abs(x - y))
        if np.isnan(diffs).any():
            print(f"compare_scp.py: '{key_a}': NaN in one scp where the other has a number",
                  file=sys.stderr)
            return 1
        diff = float(diffs.max(initial=0))
        if diff >= worst:
            worst, worst_key = diff, key_a
        count += 1
    leftover = next(a, None) or next(b, None)
    if leftover is not None:
        print(f"compare_scp.py: the scps differ in length (from '{leftover[0]}' on)",
              file=sys.stderr)
        return 1
    print(f"{count} entries, max abs difference {worst:.3g} (at {worst_key})")
    if worst > args.tolerance:
        print(f"compare_scp.py: difference above {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
