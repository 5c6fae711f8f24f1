#!/usr/bin/env python3
"""Report on speaker embeddings: EER and same/different-speaker cosines (printed and saved to
<out>.txt) and a PNG with a 2-D projection coloured by speaker and a speaker cosine heatmap."""

import argparse
import os

import kaldiio

from speechdump.data import read_table
from speechdump.report import plot, summarize


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--projection", choices=["tsne", "pca"], default="tsne")
    p.add_argument("--title", default=None)
    p.add_argument("utt_scp", help="utterance embeddings (<tag>.scp)")
    p.add_argument("spk_scp", help="speaker embeddings (spk_<tag>.scp)")
    p.add_argument("utt2spk")
    p.add_argument("out", help="writes <out>.png and <out>.txt")
    args = p.parse_args(argv)

    vectors = dict(kaldiio.load_scp_sequential(args.utt_scp))
    speakers = dict(kaldiio.load_scp_sequential(args.spk_scp))
    utt2spk = read_table(args.utt2spk)
    report = summarize(vectors, utt2spk)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".txt", "w", encoding="utf-8") as f:
        f.write(report.text() + "\n")
    plot(vectors, utt2spk, speakers, args.title or args.utt_scp, args.out + ".png",
         args.projection)
    print(report.text())
    print(f"report: {args.out}.png {args.out}.txt")


if __name__ == "__main__":
    main()
