#!/usr/bin/env python3
"""Writes <data_dir>/utt2dur (seconds per utterance), like Kaldi's utils/data/get_utt2dur.sh.

Segments give durations directly; files are read from their headers; pipes and ark entries
are decoded.
"""

import argparse
import os
import sys
from typing import Dict, Tuple

import soundfile

from speechdump import cli
from speechdump.audio import read_samples
from speechdump.data import Utterance, read_segments, read_table, write_table
from speechdump.errors import DataDirError, UtteranceError


def duration(utt: Utterance) -> float:
    source = utt.source.strip()
    if not source.endswith("|") and os.path.exists(source):
        return soundfile.info(source).duration
    samples, rate = read_samples(utt)
    return len(samples) / rate


def read_duration(utt_id: str, source: str, skip_hint: str) -> float:
    """Seconds of one wav.scp entry; an UtteranceError naming it when it cannot be read."""
    try:
        return duration(Utterance(utt_id, source))
    except Exception as exc:  # soundfile, pipes and kaldiio raise their own types
        raise UtteranceError(utt_id, source, f"cannot read audio: {exc}{skip_hint}") from exc


def read_durations(data_dir: str, skip_bad: bool
                   ) -> Tuple[Dict[str, float], Dict[str, UtteranceError]]:
    """(utt -> seconds, utt -> why it cannot be read); without ``skip_bad`` the first
    unreadable utterance raises."""
    hint = "" if skip_bad else " (--skip_bad true lists every unreadable utterance and goes on)"
    recordings = read_table(os.path.join(data_dir, "wav.scp"))
    segments = os.path.join(data_dir, "segments")
    if os.path.exists(segments):
        spans = read_segments(segments)
    else:
        spans = {utt: (utt, 0.0, -1.0) for utt in recordings}
    durations: Dict[str, float] = {}
    bad: Dict[str, UtteranceError] = {}
    for utt, (reco, start, end) in spans.items():
        if reco not in recordings:
            raise DataDirError(f"{segments}: recording '{reco}' of '{utt}' is not in "
                               f"{data_dir}/wav.scp")
        try:
            if end == -1:
                end = read_duration(reco, recordings[reco], hint)
        except UtteranceError as exc:
            if not skip_bad:
                raise
            bad[utt] = exc
            continue
        durations[utt] = end - start
    return durations, bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--skip_bad", type=cli.str2bool, default=False,
                   help="true: list every unreadable utterance and write no utt2dur (Kaldi "
                        "needs a line per utterance); extraction with --skip_bad true then "
                        "lists them in bad_utts. false: stop at the first one")
    p.add_argument("data_dir")
    args = p.parse_args(argv)
    out = os.path.join(args.data_dir, "utt2dur")
    durations, bad = read_durations(args.data_dir, args.skip_bad)
    if bad:
        for utt, exc in bad.items():
            print(f"get_utt2dur.py: skipped '{utt}': {exc}", file=sys.stderr)
        if os.path.exists(out):
            os.remove(out)  # it would not describe this data dir
        print(f"get_utt2dur.py: {len(bad)} of {len(bad) + len(durations)} utterances of "
              f"{args.data_dir} cannot be read: {' '.join(list(bad)[:20])}"
              f"{' ...' if len(bad) > 20 else ''} (reasons above); no {out} written, as Kaldi "
              "needs one line per utterance. Extraction with --skip_bad true lists them in "
              "<out_dir>/bad_utts; or remove them from the data dir")
        return 0
    write_table(out, ((utt, f"{seconds:.3f}") for utt, seconds in durations.items()))
    print(f"get_utt2dur.py: wrote {out} ({len(durations)} utterances, "
          f"{sum(durations.values()) / 3600:.3f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
