#!/usr/bin/env python3
"""Writes <data_dir>/utt2dur (seconds per utterance), like Kaldi's utils/data/get_utt2dur.sh.

Segments give durations directly; files are read from their headers; pipes and ark entries
are decoded.
"""

import argparse
import os
import sys

import soundfile

from speechdump.audio import read_samples
from speechdump.data import Utterance, read_segments, read_table, write_table


def duration(utt: Utterance) -> float:
    source = utt.source.strip()
    if not source.endswith("|") and os.path.exists(source):
        return soundfile.info(source).duration
    samples, rate = read_samples(utt)
    return len(samples) / rate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data_dir")
    args = p.parse_args(argv)
    segments = os.path.join(args.data_dir, "segments")
    if os.path.exists(segments):
        recordings = read_table(os.path.join(args.data_dir, "wav.scp"))
        durations = {}
        for utt, (reco, start, end) in read_segments(segments).items():
            if end == -1:
                end = duration(Utterance(reco, recordings[reco]))
            durations[utt] = end - start
    else:
        durations = {}
        for utt, source in read_table(os.path.join(args.data_dir, "wav.scp")).items():
            try:
                durations[utt] = duration(Utterance(utt, source))
            except Exception as exc:  # soundfile, pipes and kaldiio raise their own types
                print(f"get_utt2dur.py: cannot read '{utt}' ({source}): {exc}", file=sys.stderr)
                return 1
    write_table(os.path.join(args.data_dir, "utt2dur"),
                ((utt, f"{seconds:.3f}") for utt, seconds in durations.items()))
    print(f"get_utt2dur.py: wrote {args.data_dir}/utt2dur ({len(durations)} utterances, "
          f"{sum(durations.values()) / 3600:.3f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
