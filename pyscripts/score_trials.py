#!/usr/bin/env python3
"""Scores a trial list with speaker embeddings (speechdump.verification).

  score_trials.py [options] <trials> <enroll_scp> <test_scp> <out_dir>

writes <out_dir>/scores (<enroll> <test> <score> [target|nontarget], in trial order) and, for a
labelled list, <out_dir>/results (EER in percent, then one minDCF per --p_target) and
<out_dir>/det.png. Trials: Kaldi's '<enroll> <test> target|nontarget', VoxCeleb's
'1|0 <path> <path>' (paths mapped to ids through --data_dir's wav.scp) or '<enroll> <test>'.
"""

import argparse
import os
import sys

from speechdump import cli
from speechdump.errors import OptionError
from speechdump.verification.metrics import OperatingPoint
from speechdump.verification.pipeline import NORMS, ScoringConfig, score, write_outputs


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=["cosine", "plda"], default="cosine")
    p.add_argument("--plda", default=None, help="model of scripts/train_plda.sh (plda.npz)")
    p.add_argument("--norm", choices=NORMS, default="none",
                   help="score normalisation against --cohort (snorm: all of it; asnorm: the "
                        "--top_n highest scores of each side)")
    p.add_argument("--cohort", default=None, help="scp of cohort embeddings (speaker means)")
    p.add_argument("--top_n", type=int, default=300, help="cohort scores kept by asnorm")
    p.add_argument("--mean_scp", default=None,
                   help="cosine: subtract the mean of these embeddings first")
    p.add_argument("--p_target", default="0.01 0.05", help="priors of the minDCF figures")
    p.add_argument("--c_miss", type=float, default=1.0)
    p.add_argument("--c_fa", type=float, default=1.0)
    p.add_argument("--enroll_by", choices=["utt", "spk"], default="utt",
                   help="spk: enrollment ids are speakers of --data_dir's utt2spk, each the "
                        "mean of its utterances")
    p.add_argument("--data_dir", default=None,
                   help="data dir of the embeddings: wav.scp maps VoxCeleb trial paths to ids, "
                        "utt2spk groups --enroll_by spk")
    p.add_argument("--title", default=None, help="title of the DET plot")
    p.add_argument("trials")
    p.add_argument("enroll_scp")
    p.add_argument("test_scp")
    p.add_argument("out_dir")
    return p


def operating_points(args) -> list:
    try:
        priors = [float(p) for p in args.p_target.replace(",", " ").split()]
    except ValueError:
        raise OptionError(f"--p_target must be numbers in (0, 1), got '{args.p_target}'") \
            from None
    bad = [p for p in priors if not 0 < p < 1]
    if not priors or bad or args.c_miss <= 0 or args.c_fa <= 0:
        raise OptionError(f"--p_target must be numbers in (0, 1) and --c_miss, --c_fa "
                          f"positive; got '{args.p_target}', {args.c_miss}, {args.c_fa}")
    return [OperatingPoint(p, args.c_miss, args.c_fa) for p in priors]


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    points = operating_points(args)
    config = ScoringConfig(backend=args.backend, plda=args.plda, norm=args.norm,
                           cohort=args.cohort, top_n=args.top_n, mean_scp=args.mean_scp,
                           enroll_by=args.enroll_by, data_dir=args.data_dir)
    scored = score(args.trials, args.enroll_scp, args.test_scp, config)
    trials = scored.trials
    norm = "" if args.norm == "none" else \
        f", {args.norm} against {scored.cohort_size} cohort embeddings" + \
        (f" (top {args.top_n})" if args.norm == "asnorm" else "")
    print(f"scored {len(trials)} trials ({len(set(trials.enroll))} enrollment and "
          f"{len(set(trials.test))} test ids) with {args.backend}{norm} in "
          f"{scored.seconds:.2f} s")
    title = args.title or f"{os.path.basename(args.trials)}: {args.backend}, norm {args.norm}"
    rows = write_outputs(scored, args.out_dir, points, title)
    if not rows:
        print(f"{args.trials} has no labels: scores only, no figures; {args.out_dir}/scores")
        return 0
    targets = int(trials.is_target.sum())
    print(f"{targets} target and {len(trials) - targets} non-target trials")
    for name, value, threshold in rows:
        print(f"{name} {value:.4f} (threshold {threshold:.4f})")
    print(f"outputs: {args.out_dir}/scores {args.out_dir}/results {args.out_dir}/det.png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
