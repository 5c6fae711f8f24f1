#!/usr/bin/env python3
"""Trains a two-covariance PLDA back end (LDA, centring, length normalisation, then EM) on
speaker-labelled embeddings (speechdump.verification.plda).

  train_plda.py [--lda_dim N] [--iterations N] <embed_scp> <utt2spk> <model.npz>

scripts/score_trials.sh --backend plda --plda <model.npz> scores trials with it.
"""

import argparse
import sys

from speechdump import cli
from speechdump.data import read_table
from speechdump.verification.plda import train
from speechdump.verification.scoring import read_embeddings


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lda_dim", type=int, default=200,
                   help="LDA dimension (at most the embedding dimension and speakers - 1)")
    p.add_argument("--iterations", type=int, default=10, help="EM iterations")
    p.add_argument("embed_scp")
    p.add_argument("utt2spk")
    p.add_argument("model")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.lda_dim < 1 or args.iterations < 1:
        p = get_parser()
        p.error("--lda_dim and --iterations must be positive")
    model = train(read_embeddings(args.embed_scp), read_table(args.utt2spk), args.lda_dim,
                  args.iterations)
    model.save(args.model)
    info = model.info
    capped = "" if info["lda_dim"] == args.lda_dim else \
        f" (--lda_dim {args.lda_dim} capped by the dimension and the speakers - 1)"
    print(f"trained PLDA on {info['embeddings']} embeddings of {info['speakers']} speakers: "
          f"dimension {info['dim']}, LDA to {info['lda_dim']}{capped}, {info['iterations']} EM "
          f"iterations -> {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
