#!/usr/bin/env python3
"""Merges the jobs of an extraction stage, aligns every stream with the data dir and checks it.

For each stream writes <out_dir>/<stream>.scp (reference order: text's, else the data dir's),
plus utt2num_frames for frame-level streams (checked against the arks), utt2dur, dropped_utts
and bad_utts; with --spk_means, spk_<tag>.{ark,scp} from utt2spk. Prints the stage summary.
"""

import argparse
import os
import sys
import time

from speechdump.align import AlignmentError, align, merge_scps, require_complete, validate_scp
from speechdump.data import read_keys, read_table, write_table
from speechdump.job import read_done
from speechdump.speaker import SpeakerMeans
from speechdump.storage import write_ark_scp


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--source_ids", required=True,
                   help="the data dir's utterance list (segments or wav.scp)")
    p.add_argument("--text", default=None, help="reference ids and order; else source_ids")
    p.add_argument("--utt2spk", default=None, help="speaker count in the summary; --spk_means")
    p.add_argument("--spk_means", choices=["true", "false"], default="false",
                   help="write spk_<tag>.{ark,scp}: the mean vector of each speaker")
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


def job_records(split_dir: str, nj: int) -> list:
    unfinished = [str(job) for job in range(1, nj + 1)
                  if not os.path.exists(os.path.join(split_dir, f"done.{job}"))]
    if unfinished:
        raise AlignmentError(f"jobs {', '.join(unfinished)} of {nj} did not finish "
                             f"(no done.<job> in {split_dir})")
    records = [read_done(split_dir, job) for job in range(1, nj + 1)]
    if any(r["streams"] != records[0]["streams"] for r in records):
        raise AlignmentError(f"the jobs in {split_dir} wrote different streams")
    return records


def merged_table(split_dir: str, name: str, nj: int) -> dict:
    table = {}
    for job in range(1, nj + 1):
        path = os.path.join(split_dir, f"{name}.{job}")
        if os.path.exists(path):
            table.update(read_table(path))
    return table


def write_speaker_means(args, means: dict) -> None:
    prefix = os.path.join(args.out_dir, f"spk_{args.tag}")
    write_ark_scp(prefix + ".ark", prefix + ".scp", means)
    validate_scp(prefix + ".scp", list(means))
    print(f"{prefix}.scp: {len(means)} speakers "
          f"({'L2-normalised ' if args.spk_norm == 'true' else ''}mean of each speaker's "
          f"{'L2-normalised ' if args.utt_norm == 'true' else ''}utterance vectors)")


def merge(args) -> None:
    records = job_records(args.split_dir, args.nj)
    streams, frame_level = records[0]["streams"], records[0]["frame_level"]
    bad = merged_table(args.split_dir, "bad_utts", args.nj)
    durations = {k: float(v) for k, v in merged_table(args.split_dir, "utt2dur", args.nj).items()}

    source = read_keys(args.source_ids)
    reference = read_keys(args.text) if args.text else source
    ref_set = set(reference)
    dropped = [utt for utt in source if utt not in ref_set]
    write_table(os.path.join(args.out_dir, "dropped_utts"), ((u, "not in text") for u in dropped))
    write_table(os.path.join(args.out_dir, "bad_utts"), sorted(bad.items()))

    frames = merged_table(args.split_dir, "utt2num_frames", args.nj) if frame_level else None
    utt2spk = read_table(args.utt2spk) if args.utt2spk else {}
    means = None
    if args.spk_means == "true":
        if len(streams) != 1:
            raise AlignmentError("speaker means need a single stream")
        means = SpeakerMeans(utt2spk, normalize_utts=args.utt_norm == "true")
    kept = None
    for stream in streams:
        entries = merge_scps(os.path.join(args.split_dir, f"{stream}.{job}.scp")
                             for job in range(1, args.nj + 1))
        alignment = align(entries, reference)
        require_complete(alignment, excused=bad)
        if alignment.dropped:  # only reference ids are extracted: anything else is a bug upstream
            raise AlignmentError(f"{stream}: outputs for ids not in the reference: "
                                 f"{listing(alignment.dropped)}")
        kept = [key for key, _ in alignment.entries]
        out_scp = os.path.join(args.out_dir, f"{stream}.scp")
        write_table(out_scp, alignment.entries)
        if means is not None:
            missing = [key for key in kept if key not in utt2spk]
            if missing:
                raise AlignmentError(f"ids missing from {args.utt2spk}: {listing(missing)}")
        # The speaker sums take the vectors as they are checked: the arks are read once.
        shape = validate_scp(out_scp, kept, num_frames=frames,
                             each=means.add if means is not None else None)
        print(f"{out_scp}: {len(kept)} {'matrices' if frame_level else 'vectors'} of "
              f"dimension {shape[-1]}")
    write_table(os.path.join(args.out_dir, "utt2dur"), ((k, f"{durations[k]:.3f}") for k in kept))
    if frame_level:
        write_table(os.path.join(args.out_dir, "utt2num_frames"), ((k, frames[k]) for k in kept))

    speakers = len({utt2spk[k] for k in kept if k in utt2spk})
    if means is not None:
        write_speaker_means(args, means.means(normalize=args.spk_norm == "true"))

    seconds = sum(durations[k] for k in kept)
    wall = time.time() - args.start_time if args.start_time else float("nan")
    print(f"{args.tag}: {len(kept)} utterances, {speakers} speakers, {seconds / 3600:.3f} h of "
          f"audio ({seconds:.1f} s) in {wall:.1f} s wall time "
          f"({seconds / wall:.1f} s of audio per second)")
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
