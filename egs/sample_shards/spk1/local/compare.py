#!/usr/bin/env python3
"""Compares scps with a reference run's bit for bit: the same ids in the same order, and every
array of the same dtype, shape and bytes. Prints one line when all pairs are equal; otherwise
names the first difference and exits 1.

    local/compare.py --name wds_tar --reference "the plain run" \\
        dump/resemblyzer/plain/resemblyzer.scp dump/resemblyzer/wds_tar/resemblyzer.scp \\
        [<reference scp> <scp> ...]

(pyscripts/compare_scp.py compares values within a tolerance, as Kaldi's compare-feats: this is
the stricter check, where -0.0 and 0.0, or two NaNs, differ by their bits.)
"""

import argparse
import sys

import kaldiio
import numpy as np


def compare(ref_scp: str, scp: str):
    """(number of ids equal bit for bit, None) when the scps are equal, else (number of equal
    ids before the first difference, the difference in words)."""
    ref = list(kaldiio.load_scp_sequential(ref_scp))
    got = list(kaldiio.load_scp_sequential(scp))
    for n, ((key_a, a), (key_b, b)) in enumerate(zip(ref, got)):
        a, b = np.asarray(a), np.asarray(b)
        if key_a != key_b:
            return n, f"line {n + 1}: id '{key_b}', the reference has '{key_a}'"
        if a.dtype != b.dtype or a.shape != b.shape:
            return n, (f"'{key_a}': {b.dtype} {b.shape}, the reference has {a.dtype} "
                       f"{a.shape}")
        if a.tobytes() != b.tobytes():
            with np.errstate(invalid="ignore"):
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            where = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
            return n, (f"'{key_a}': {int(np.count_nonzero(a.view(np.uint8) != b.view(np.uint8)))}"
                       f" bytes differ (largest difference {np.nanmax(diff, initial=0):.3g}, "
                       f"at element {where}: {a.flat[where]} vs {b.flat[where]})")
    if len(ref) != len(got):
        longer, which = (ref, "the reference") if len(ref) > len(got) else (got, scp)
        return min(len(ref), len(got)), (f"{len(got)} ids, the reference has {len(ref)}: "
                                         f"'{longer[min(len(ref), len(got))][0]}' and on are "
                                         f"only in {which}")
    return len(got), None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="", help="what the printed lines start with")
    p.add_argument("--reference", default="the reference", help="the reference, in words")
    p.add_argument("scps", nargs="+", metavar="ref_scp scp",
                   help="pairs: the reference run's scp, then the one compared with it")
    args = p.parse_args(argv)
    if len(args.scps) % 2:
        p.error("give scps in pairs: <reference scp> <scp> ...")
    counts = []
    for ref_scp, scp in zip(args.scps[::2], args.scps[1::2]):
        equal, diff = compare(ref_scp, scp)
        if diff is not None:
            print(f"ERROR: {args.name + ': ' if args.name else ''}{scp} differs from "
                  f"{args.reference} ({ref_scp}; equal for its first {equal} ids): {diff}",
                  file=sys.stderr)
            return 1
        counts.append(f"{equal} ids of {scp}")
    print(f"{args.name + ': ' if args.name else ''}equal to {args.reference} bit for bit (same "
          f"ids, same vectors): {', '.join(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
