#!/usr/bin/env python3
"""Merges the jobs of a speaker-embedding stage, aligns with the data dir, writes speaker means.

Writes <out_dir>/<tag>.scp (utterances in reference order), <out_dir>/spk_<tag>.{ark,scp},
<out_dir>/dropped_utts and <out_dir>/bad_utts, checks them, and prints the stage summary.
"""

import argparse
import os
import sys
import time

import kaldiio

from speechdump.align import AlignmentError, align, merge_scps, require_complete, validate_scp
from speechdump.data import read_keys, read_table, write_table
from speechdump.speaker import speaker_means
from speechdump.storage import write_ark_scp


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--source_ids", required=True,
                   help="the data dir's utterance list (segments or wav.scp)")
    p.add_argument("--text", default=None, help="reference ids and order; else source_ids")
    p.add_argument("--utt2spk", required=True)
    p.add_argument("--utt_norm", choices=["true", "false"], default="false",
                   help="L2-normalise utterance vectors before averaging them")
    p.add_argument("--spk_norm", choices=["true", "false"], default="true",
                   help="L2-normalise each speaker's mean vector")
    p.add_argument("--start_time", type=float, default=None, help="stage start (epoch seconds)")
    p.add_argument("split_dir")
    p.add_argument("out_dir")
    return p


def listing(ids, n=20) -> str:
    return " ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def merge(args) -> None:
    prefixes = [os.path.join(args.split_dir, f"{args.tag}.{job}") for job in range(1, args.nj + 1)]
    unfinished = [p + ".scp" for p in prefixes if not os.path.exists(p + ".scp")]
    if unfinished:
        raise AlignmentError(f"{len(unfinished)} jobs did not finish: no {', '.join(unfinished)}")
    entries = merge_scps(p + ".scp" for p in prefixes)
    bad = {}
    durations = {}
    for p in prefixes:
        bad.update(read_table(p + ".bad_utts"))
        durations.update((k, float(v)) for k, v in read_table(p + ".utt2dur").items())

    source = read_keys(args.source_ids)
    reference = read_keys(args.text) if args.text else source
    ref_set = set(reference)
    dropped = [utt for utt in source if utt not in ref_set]
    alignment = align(entries, reference)
    require_complete(alignment, excused=bad)
    if alignment.dropped:  # the stage extracts only reference ids; anything else is a bug upstream
        raise AlignmentError(f"outputs for ids not in the reference: {listing(alignment.dropped)}")

    out_scp = os.path.join(args.out_dir, f"{args.tag}.scp")
    write_table(os.path.join(args.out_dir, "dropped_utts"),
                ((u, "not in text") for u in dropped))
    write_table(os.path.join(args.out_dir, "bad_utts"), sorted(bad.items()))
    write_table(out_scp, alignment.entries)
    dim = validate_scp(out_scp, [key for key, _ in alignment.entries])

    utt2spk = read_table(args.utt2spk)
    no_speaker = [key for key, _ in alignment.entries if key not in utt2spk]
    if no_speaker:
        raise AlignmentError(f"ids missing from {args.utt2spk}: {listing(no_speaker)}")
    means = speaker_means(kaldiio.load_scp_sequential(out_scp), utt2spk,
                          normalize_utts=args.utt_norm == "true",
                          normalize=args.spk_norm == "true")
    spk_prefix = os.path.join(args.out_dir, f"spk_{args.tag}")
    write_ark_scp(spk_prefix + ".ark", spk_prefix + ".scp", means)
    validate_scp(spk_prefix + ".scp", list(means))

    kept = [key for key, _ in alignment.entries]
    seconds = sum(durations[k] for k in kept)
    wall = time.time() - args.start_time if args.start_time else float("nan")
    print(f"{args.tag}: {len(kept)} utterances, {len(means)} speakers, {seconds / 3600:.3f} h "
          f"of audio ({seconds:.1f} s) in {wall:.1f} s wall time "
          f"({seconds / wall:.1f} s of audio per second), dimension {dim[-1]}")
    print(f"utterances: {out_scp}")
    print(f"speakers:   {spk_prefix}.scp ({'L2-normalised ' if args.spk_norm == 'true' else ''}"
          f"mean of each speaker's {'L2-normalised ' if args.utt_norm == 'true' else ''}"
          f"utterance vectors)")
    if dropped:
        print(f"dropped {len(dropped)} ids not in {args.text}: {listing(dropped)} "
              f"(list in {args.out_dir}/dropped_utts)")
    if bad:
        print(f"skipped {len(bad)} bad utterances: {listing(sorted(bad))} "
              f"(reasons in {args.out_dir}/bad_utts)")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        merge(args)
    except AlignmentError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
