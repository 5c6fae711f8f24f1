#!/usr/bin/env python3
"""Report on speaker embeddings: EER and same/different-speaker cosines (printed and saved to
<out>.txt) and a PNG with a 2-D projection coloured by speaker and a speaker cosine heatmap."""

import argparse
import os
import sys

import kaldiio

from speechdump import cli
from speechdump.data import read_table
from speechdump.errors import SpeechdumpError
from speechdump.report import plot, report_sample, summarize


def require_inputs(args: argparse.Namespace) -> None:
    """A missing input is an error naming it and what writes it."""
    for path, writer in ((args.utt_scp, "scripts/extract_spk_embed.sh: run stage 3 first"),
                         (args.spk_scp, "scripts/extract_spk_embed.sh: run stage 3 first"),
                         (args.utt2spk, "the data dir's: run stages 1 and 2 first")):
        if not os.path.isfile(path):
            raise SpeechdumpError(f"{path} does not exist (it is written by {writer})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--projection", choices=["tsne", "pca"], default="tsne")
    p.add_argument("--title", default=None)
    p.add_argument("--max_utterances", type=int, default=3000,
                   help="a larger set is reported on a sample of this many utterances (up to 10 "
                        "of each of speakers drawn with a fixed seed): every pair of 150,000 "
                        "utterances would take 180 GB")
    p.add_argument("utt_scp", help="utterance embeddings (<tag>.scp)")
    p.add_argument("spk_scp", help="speaker embeddings (spk_<tag>.scp)")
    p.add_argument("utt2spk")
    p.add_argument("out", help="writes <out>.png and <out>.txt")
    args = p.parse_args(argv)
    require_inputs(args)

    vectors = dict(kaldiio.load_scp_sequential(args.utt_scp))
    speakers = dict(kaldiio.load_scp_sequential(args.spk_scp))
    utt2spk = read_table(args.utt2spk)
    if not vectors:
        raise SpeechdumpError(f"{args.utt_scp} holds no vectors")
    unknown = [utt for utt in vectors if utt not in utt2spk]
    if unknown:
        raise SpeechdumpError(f"{len(unknown)} utterances of {args.utt_scp} are not in "
                              f"{args.utt2spk}: {' '.join(unknown[:10])}")
    sample = report_sample(list(vectors), utt2spk, args.max_utterances)
    note = None
    if len(sample) < len(vectors):
        note = (f"report on a sample of {len(sample)} of the {len(vectors)} utterances "
                f"(--max_utterances {args.max_utterances}: up to 10 of each of "
                f"{len({utt2spk[u] for u in sample})} speakers drawn with a fixed seed)")
        vectors = {u: vectors[u] for u in sample}
        kept = {utt2spk[u] for u in sample}
        speakers = {s: v for s, v in speakers.items() if s in kept}
    report = summarize(vectors, utt2spk)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".txt", "w", encoding="utf-8") as f:
        f.write((note + "\n" if note else "") + report.text() + "\n")
    plot(vectors, utt2spk, speakers, args.title or args.utt_scp, args.out + ".png",
         args.projection)
    if note:
        print(note)
    print(report.text())
    print(f"report: {args.out}.png {args.out}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
