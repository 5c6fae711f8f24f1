#!/usr/bin/env python3
"""The last step of scripts/compute_vad.sh: the merged speech regions (<out_dir>/<tag>.scp,
int32 [regions, 2] sample ranges at 16 kHz per utterance, and <out_dir>/utt2dur) into
<out_dir>/segments, <out_dir>/utt2speech_ratio and the data dir <out_dir>/data
(speechdump.vad). Lists the utterances without speech by name."""

import argparse
import os
import sys

from speechdump import cli
from speechdump.data import read_table
from speechdump.errors import DataDirError
from speechdump.kaldi_io import read_scp_arrays
from speechdump.vad import write_outputs


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", default="vad", help="stem of the merged regions' scp")
    p.add_argument("data_dir")
    p.add_argument("out_dir")
    return p


def listing(ids, n=20) -> str:
    return " ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    scp = os.path.join(args.out_dir, f"{args.tag}.scp")
    dur_path = os.path.join(args.out_dir, "utt2dur")
    for path in (scp, dur_path):
        if not os.path.isfile(path):
            raise DataDirError(f"{path} is missing: the extraction did not finish")
    regions = dict(read_scp_arrays(scp))
    utt2dur = {utt: float(value) for utt, value in read_table(dur_path).items()}
    summary = write_outputs(regions, utt2dur, args.data_dir, args.out_dir)
    ratio = summary.speech_seconds / summary.audio_seconds if summary.audio_seconds else 0.0
    print(f"{summary.regions} speech regions in {summary.utterances} utterances: "
          f"{summary.speech_seconds:.1f} s of speech in {summary.audio_seconds:.1f} s of audio "
          f"({100 * ratio:.1f} %); {args.out_dir}/segments, {args.out_dir}/utt2speech_ratio, "
          f"data dir {args.out_dir}/data")
    if summary.no_speech:
        print(f"no speech found in {len(summary.no_speech)} utterances (ratio 0, no region, not "
              f"in {args.out_dir}/data): {listing(summary.no_speech)}")
    if os.path.exists(os.path.join(args.data_dir, "text")):
        print(f"{args.out_dir}/data has no text: a region holds part of its utterance's words, "
              f"and which part is not known ({len(summary.split)} utterances are split into "
              "several regions; even one region may have lost a short word), as Kaldi's "
              "utils/data/subsegment_data_dir.sh writes no text without one of the pieces")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
