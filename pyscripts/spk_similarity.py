#!/usr/bin/env python3
"""Same- vs different-speaker cosine similarity of the utterance embeddings in an scp."""

import argparse

import kaldiio

from speechdump.data import read_table
from speechdump.speaker import cosine_summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("scp", help="utterance embeddings")
    p.add_argument("utt2spk")
    args = p.parse_args(argv)
    vectors = dict(kaldiio.load_scp_sequential(args.scp))
    utt2spk = read_table(args.utt2spk)
    summary = cosine_summary(vectors, utt2spk)
    speakers = {utt2spk[u] for u in vectors}
    print(f"{len(vectors)} utterances of {len(speakers)} speakers: {summary}")
    if summary.same_pairs and summary.diff_pairs:
        verdict = "higher" if summary.same_mean > summary.diff_mean else "NOT higher"
        print(f"same-speaker pairs score {verdict} than different-speaker pairs on average")


if __name__ == "__main__":
    main()
