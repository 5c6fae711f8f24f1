#!/usr/bin/env python3
"""Learns k-means centers on the frames of a seeded sample of the utterances of a feats.scp, out of
core: k-means++ seeding on a bounded seeded sample of the frames, then passes of
MiniBatchKMeans.partial_fit over mini-batches read one utterance at a time; writes
<km_dir>/centers.npy, centers.mat and kmeans.json and prints a summary."""

import argparse
import logging
import os
import resource
import sys
import time

from speechdump import cli
from speechdump.errors import TokenError
from speechdump.tokens import learn, save_model


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n_clusters", type=int, default=100)
    p.add_argument("--portion", type=float, default=0.1,
                   help="share of the utterances to train on, in (0, 1]")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the utterance sample, the seeding sample of frames, k-means++ "
                        "and the order of the utterances on each pass")
    p.add_argument("--max_frames", type=int, default=0,
                   help="cap on training frames (0: every frame of the sampled utterances)")
    p.add_argument("--batch_size", type=int, default=10000,
                   help="frames per mini-batch (one partial_fit); k-means++ seeds on a sample of "
                        "3 x max(batch_size, n_clusters) frames")
    p.add_argument("--max_iter", type=int, default=100,
                   help="passes over the training frames at most; training stops earlier, after "
                        "a pass that lowered the frames' mean squared distance to their centers "
                        "by less than 0.1%%")
    p.add_argument("--n_init", type=int, default=3,
                   help="k-means++ seedings tried on the seeding sample; the one of lowest "
                        "inertia there is trained")
    p.add_argument("--num_threads", type=int, default=1,
                   help="threads of the training (the CPUs the job was given)")
    p.add_argument("feats_scp")
    p.add_argument("km_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.time()
    if (args.max_frames < 0 or args.batch_size < 1 or args.max_iter < 1 or args.n_init < 1
            or args.num_threads < 1):
        raise TokenError("--max_frames must be >= 0; --batch_size, --max_iter, --n_init and "
                         "--num_threads must be positive")
    model = learn(args.feats_scp, args.n_clusters, portion=args.portion, seed=args.seed,
                  max_frames=args.max_frames, batch_size=args.batch_size,
                  max_iter=args.max_iter, n_init=args.n_init, num_threads=args.num_threads)
    save_model(args.km_dir, model)
    s = model.settings
    print(f"{args.km_dir}: {s['n_clusters']} centers of dimension {s['dim']} from "
          f"{s['num_frames']} frames of {s['num_utts']}/{s['num_utts_in_scp']} utterances of "
          f"{args.feats_scp} (portion {s['portion']}, seed {s['seed']}"
          f"{', max_frames %d' % s['max_frames'] if s['max_frames'] else ''}); "
          f"{s['passes']} passes, {s['mini_batches']} mini-batches of {s['batch_size']} frames, "
          f"{'the last gained under 0.1 %' if s['converged'] else 'max_iter reached'}"
          f"; inertia {s['inertia']:.6g} ({s['inertia_per_frame']:.4g} per frame); "
          f"{time.time() - start:.1f} s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    logging.info("peak memory %.0f MiB", peak_mib)
    print(f"model: {os.path.join(args.km_dir, 'centers.npy')} (and centers.mat), "
          f"settings: {os.path.join(args.km_dir, 'kmeans.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
