#!/usr/bin/env python3
"""Learns k-means centers (MiniBatchKMeans) on the frames of a seeded sample of the utterances of
a feats.scp; writes <km_dir>/centers.npy, centers.mat and kmeans.json and prints a summary."""

import argparse
import logging
import os
import sys
import time

from speechdump.tokens import TokenError, learn, save_model


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n_clusters", type=int, default=100)
    p.add_argument("--portion", type=float, default=0.1,
                   help="share of the utterances to train on, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="utterance sample and k-means seed")
    p.add_argument("--max_frames", type=int, default=0,
                   help="cap on training frames (0: every frame of the sampled utterances)")
    p.add_argument("--batch_size", type=int, default=10000, help="MiniBatchKMeans batch size")
    p.add_argument("--max_iter", type=int, default=100, help="MiniBatchKMeans passes at most")
    p.add_argument("--n_init", type=int, default=3, help="k-means++ initialisations tried")
    p.add_argument("--num_threads", type=int, default=1,
                   help="threads of the training (the CPUs the job was given)")
    p.add_argument("feats_scp")
    p.add_argument("km_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.time()
    try:
        if (args.max_frames < 0 or args.batch_size < 1 or args.max_iter < 1 or args.n_init < 1
                or args.num_threads < 1):
            raise TokenError("--max_frames must be >= 0; --batch_size, --max_iter, --n_init and "
                             "--num_threads must be positive")
        model = learn(args.feats_scp, args.n_clusters, portion=args.portion, seed=args.seed,
                      max_frames=args.max_frames, batch_size=args.batch_size,
                      max_iter=args.max_iter, n_init=args.n_init,
                      num_threads=args.num_threads)
        save_model(args.km_dir, model)
    except TokenError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    s = model.settings
    print(f"{args.km_dir}: {s['n_clusters']} centers of dimension {s['dim']} from "
          f"{s['num_frames']} frames of {s['num_utts']}/{s['num_utts_in_scp']} utterances of "
          f"{args.feats_scp} (portion {s['portion']}, seed {s['seed']}"
          f"{', max_frames %d' % s['max_frames'] if s['max_frames'] else ''}); "
          f"inertia {s['inertia']:.6g} ({s['inertia_per_frame']:.4g} per frame); "
          f"{time.time() - start:.1f} s")
    print(f"model: {os.path.join(args.km_dir, 'centers.npy')} (and centers.mat), "
          f"settings: {os.path.join(args.km_dir, 'kmeans.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
