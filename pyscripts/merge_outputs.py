#!/usr/bin/env python3
"""Merges the jobs of a stage (extraction or tokens), aligns every stream with the reference
ids and checks it.

For each stream writes <out_dir>/<stream>.scp (in the order of --reference, else of --text,
else of --source_ids), plus utt2num_frames for frame-level streams (checked against the arks),
utt2dur where the jobs read audio, bad_utts, and dropped_utts with --source_ids; an integer
token stream also gets its Kaldi text form <out_dir>/<stream> (``<utt> <t1> <t2> ...``; codebook
matrices frame-major: ``t0c0 t0c1 ... t1c0 ...``); with
--spk_means, spk_<tag>.{ark,scp} from utt2spk; with --kmeans, the token usage of that model.
Refuses jobs that ran with different configs or streams (at different --precision, naming
each precision's jobs). Writes, last, <out_dir>/meta.json: the stage's config and streams.
Prints the stage summary.
"""

import argparse
import os
import sys
import time

import numpy as np

from speechdump import cli
from speechdump.align import AlignmentError, align, merge_scps, require_complete, validate_scp
from speechdump.data import atomic_path, read_keys, read_table, write_table
from speechdump.errors import TokenError
from speechdump.extractors.base import INT, TOKENS, Stream
from speechdump.job import MERGED_RECORD, read_done, write_merged_record
from speechdump.kaldi_io import read_scp_arrays, write_ark_scp
from speechdump.precision import FP32
from speechdump.provenance import config_changes
from speechdump.speaker import SpeakerMeans


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tag", required=True)
    p.add_argument("--nj", type=int, required=True)
    p.add_argument("--source_ids", default=None,
                   help="the data dir's utterance list (segments or wav.scp): its ids not in "
                        "the reference are listed in dropped_utts")
    p.add_argument("--text", default=None, help="the data dir's text: the reference ids and "
                                                "order, unless --reference")
    p.add_argument("--reference", default=None,
                   help="an scp or text whose ids (first field) and order the outputs follow, "
                        "e.g. the feats.scp tokens are made of")
    p.add_argument("--utt2spk", default=None, help="speaker count in the summary; --spk_means")
    p.add_argument("--spk_means", choices=["true", "false"], default="false",
                   help="write spk_<tag>.{ark,scp}: the mean vector of each speaker")
    p.add_argument("--utt_norm", choices=["true", "false"], default="false",
                   help="L2-normalise utterance vectors before averaging them")
    p.add_argument("--spk_norm", choices=["true", "false"], default="true",
                   help="L2-normalise each speaker's mean vector")
    p.add_argument("--kmeans", default=None, metavar="KM_DIR",
                   help="the token streams are k-means tokens of the model in KM_DIR: checks "
                        "that the jobs used its centers and prints the token usage")
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
    if any(r.get("streams") != records[0].get("streams") for r in records):
        raise AlignmentError(f"the jobs in {split_dir} wrote different streams")
    precisions = {}  # precision -> its jobs; a record without one (tokens) is fp32's
    for job, record in enumerate(records, 1):
        precisions.setdefault(record.get("config", {}).get("precision", FP32), []).append(job)
    if len(precisions) > 1:
        raise AlignmentError(
            f"the jobs in {split_dir} ran at different --precision ("
            + "; ".join(f"job{'s' if len(jobs) > 1 else ''} {', '.join(map(str, jobs))}: "
                        f"{precision}" for precision, jobs in precisions.items())
            + "): outputs of one precision never mix with another's; rerun the stage with "
              "one --precision")
    first = records[0].get("config", {})
    for job, record in enumerate(records[1:], 2):
        config = record.get("config", {})
        if config != first:
            differ = sorted(k for k in first.keys() | config.keys()
                            if first.get(k) != config.get(k))
            raise AlignmentError(f"job {job} in {split_dir} ran with another config than job 1 "
                                 f"({', '.join(differ)} differ: {config_changes(first, config)})"
                                 ": rerun the stage")
    return records


def jobs_run(records: list, start_time) -> list:
    """The jobs (numbered from 1) that ran in this stage, not reused from an earlier one: their
    records were written after the stage started (all of them when its start is not known)."""
    if not start_time:
        return list(range(1, len(records) + 1))
    return [job for job, record in enumerate(records, 1)
            if record.get("finished", start_time) >= start_time]


def describe_runs(records: list, ran: list) -> str:
    """Which jobs ran and why, and which were reused."""
    if not ran:
        return (f"all {len(records)} jobs reused: nothing they depend on changed since they ran "
                "(--force true redoes them)")
    lines = [f"job {job} ran: {records[job - 1]['why']}" for job in ran
             if records[job - 1].get("why") not in (None, "", "it has no finished output")]
    lines += [f"job {job} resumed after the {records[job - 1]['resumed']} utterances it had "
              "committed before it stopped" for job in ran if records[job - 1].get("resumed")]
    reused = [str(job) for job in range(1, len(records) + 1) if job not in ran]
    if reused:
        lines.append(f"jobs reused, nothing they depend on changed: {', '.join(reused)}")
    return "\n".join(lines) if lines else f"{len(ran)} jobs ran"


def merged_table(split_dir: str, name: str, nj: int) -> dict:
    table = {}
    for job in range(1, nj + 1):
        path = os.path.join(split_dir, f"{name}.{job}")
        if os.path.exists(path):
            table.update(read_table(path))
    return table


def job_streams(record: dict) -> dict:
    """A job record's streams: file stem -> Stream."""
    if not all(isinstance(s, dict) for s in record.get("streams", ())):
        raise AlignmentError("the job records predate typed streams: rerun the stage after "
                             "removing its split<N> directory")
    return {s["stem"]: Stream.from_record({k: v for k, v in s.items() if k != "stem"})
            for s in record["streams"]}


def chain(callbacks: list):
    """One callback that calls each of ``callbacks`` in turn; None when there is none."""
    if len(callbacks) <= 1:
        return callbacks[0] if callbacks else None  # a million calls saved on the usual merge

    def each(key: str, array: np.ndarray) -> None:
        for callback in callbacks:
            callback(key, array)
    return each


def write_token_text(scp_path: str, text_path: str) -> None:
    """The Kaldi text form of an int token scp: ``<utt> <t1> <t2> ...`` per line, same order.

    A [frames, codebooks] matrix (codec tokens) is written frame-major, ``t0c0 t0c1 ...
    t0cK-1 t1c0 ...``: the order speech-LM codec tokenizers (ESPnet's) flatten codes in; the
    line has frames x K tokens, and K is the scp's dimension (meta.json)."""
    with atomic_path(text_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key, tokens in read_scp_arrays(scp_path):
            f.write(" ".join([key, *map(str, tokens.reshape(-1).tolist())]) + "\n")


def write_speaker_means(args, means: dict) -> None:
    prefix = os.path.join(args.out_dir, f"spk_{args.tag}")
    write_ark_scp(prefix + ".ark", prefix + ".scp", means)
    validate_scp(prefix + ".scp", list(means))
    print(f"{prefix}.scp: {len(means)} speakers "
          f"({'L2-normalised ' if args.spk_norm == 'true' else ''}mean of each speaker's "
          f"{'L2-normalised ' if args.utt_norm == 'true' else ''}utterance vectors)")


def token_usage(args, records: list, streams: dict) -> dict:
    """With --kmeans: stream stem -> TokenUsage of each token stream, after checking that every
    job used the model's centers (job_records has checked that they agree)."""
    if not args.kmeans:
        return {}
    from speechdump.tokens import TokenUsage, load_model

    model = load_model(args.kmeans)
    if records[0].get("config", {}).get("centers_sha1") != model.settings["centers_sha1"]:
        raise TokenError(f"the jobs in {args.split_dir} were not made with the centers of "
                         f"{args.kmeans}")
    usage = {stem: TokenUsage(os.path.join(args.out_dir, f"{stem}.scp"), model.n_clusters)
             for stem, info in streams.items()
             if info.kind == INT and info.shape == TOKENS and info.name != "durations"}
    if not usage:
        raise TokenError(f"--kmeans {args.kmeans}: the jobs in {args.split_dir} wrote no token "
                         "stream")
    return usage


def merge(args) -> None:
    records = job_records(args.split_dir, args.nj)
    streams = job_streams(records[0])
    frame_level = any(s.frame_level for s in streams.values())
    bad = merged_table(args.split_dir, "bad_utts", args.nj)
    # Jobs that read audio say how much; token jobs read features only.
    has_audio = any(os.path.exists(os.path.join(args.split_dir, f"utt2dur.{job}"))
                    for job in range(1, args.nj + 1))
    durations = {k: float(v) for k, v in merged_table(args.split_dir, "utt2dur", args.nj).items()}
    usage = token_usage(args, records, streams)
    meta = os.path.join(args.out_dir, MERGED_RECORD)
    if os.path.exists(meta):
        os.remove(meta)  # describes the outputs about to be replaced

    reference_path = args.reference or args.text or args.source_ids
    if reference_path is None:
        raise AlignmentError("merge_outputs.py needs --reference, --text or --source_ids")
    reference = read_keys(reference_path)
    ref_set = set(reference)
    dropped = []
    if args.source_ids:
        dropped = [utt for utt in read_keys(args.source_ids) if utt not in ref_set]
        write_table(os.path.join(args.out_dir, "dropped_utts"),
                    ((u, f"not in {os.path.basename(reference_path)}") for u in dropped))
    write_table(os.path.join(args.out_dir, "bad_utts"), sorted(bad.items()))

    frames = merged_table(args.split_dir, "utt2num_frames", args.nj) if frame_level else None
    utt2spk = read_table(args.utt2spk) if args.utt2spk else {}
    means = None
    if args.spk_means == "true":
        if len(streams) != 1:
            raise AlignmentError("speaker means need a single stream")
        means = SpeakerMeans(utt2spk, normalize_utts=args.utt_norm == "true")
    kept = None
    for stream, info in streams.items():
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
        # The speaker sums and token counts take the arrays as they are checked: the arks are
        # read once.
        callbacks = [c.add for c in (means, usage.get(stream)) if c is not None]
        try:
            shape = validate_scp(out_scp, kept, num_frames=frames, each=chain(callbacks),
                                 dtype=np.int32 if info.kind == INT else None)
        except BaseException:
            os.remove(out_scp)  # an scp in the out dir has passed the checks
            raise
        what = {TOKENS: "token sequences"}.get(info.shape, "matrices" if info.frame_level
                                               else "vectors")
        print(f"{out_scp}: {len(kept)} {'int32 ' if info.kind == INT else ''}{what}"
              + (f" of dimension {shape[-1]}" if shape else ""))
        if info.kind == INT and info.shape == TOKENS and len(shape or ()) <= 1:
            text_path = os.path.join(args.out_dir, stream)
            write_token_text(out_scp, text_path)
            print(f"{text_path}: the same tokens as Kaldi text")
    if has_audio:
        write_table(os.path.join(args.out_dir, "utt2dur"),
                    ((k, f"{durations[k]:.3f}") for k in kept))
    if frame_level:
        write_table(os.path.join(args.out_dir, "utt2num_frames"), ((k, frames[k]) for k in kept))

    speakers = len({utt2spk[k] for k in kept if k in utt2spk})
    if means is not None:
        write_speaker_means(args, means.means(normalize=args.spk_norm == "true"))

    wall = time.time() - args.start_time if args.start_time else float("nan")
    ran = jobs_run(records, args.start_time)
    if has_audio:
        seconds = sum(durations[k] for k in kept)
        run_seconds = sum(records[job - 1].get("audio_seconds", 0.0) for job in ran)
        speed = (f"in {wall:.1f} s wall time ({run_seconds / wall:.1f} s of audio per second "
                 f"extracted)" if ran else "(no job ran)")
        who = f", {speakers} speakers" if args.utt2spk else ""
        print(f"{args.tag}: {len(kept)} utterances{who}, {seconds / 3600:.3f} h "
              f"of audio ({seconds:.1f} s) {speed}")
        trimmed = [records[job - 1] for job in ran if "speech_seconds" in records[job - 1]]
        if trimmed:  # --vad true: how much of the audio the jobs that ran kept as speech
            before = sum(r.get("audio_seconds", 0.0) for r in trimmed)
            after = sum(r["speech_seconds"] for r in trimmed)
            print(f"--vad true: {after:.1f} s of speech kept of {before:.1f} s of audio "
                  f"({100 * (1 - after / before) if before else 0:.1f} % removed)")
    elif not usage:
        print(f"{args.tag}: {len(kept)} utterances in {wall:.1f} s wall time")
    print(describe_runs(records, ran))
    blind = [record["input"]["unfingerprinted"] for record in records
             if "unfingerprinted" in record.get("input", {})]
    if blind:
        print(f"{sum(b['count'] for b in blind)} utterances (first: {blind[0]['first']}) read "
              "through pipe commands that name no file: a change in what they read is not seen, "
              "so a rerun reuses their jobs; --force true redoes them")
    for stem, counts in usage.items():
        what = f"{os.path.join(args.out_dir, stem)} and {counts.scp_path}"
        print("\n".join(counts.summary(what, args.kmeans, wall)))
    if dropped:
        print(f"dropped {len(dropped)} ids not in {reference_path}: {listing(dropped)} "
              f"(list in {args.out_dir}/dropped_utts)")
    if bad:
        print(f"skipped {len(bad)} bad utterances: {listing(sorted(bad))} "
              f"(reasons in {args.out_dir}/bad_utts)")
    write_merged_record(args.out_dir, {"tag": args.tag, "config": records[0].get("config", {}),
                                       "streams": records[0]["streams"], "jobs": args.nj,
                                       "utterances": len(kept), "bad": len(bad)})


def main(argv=None) -> int:
    merge(get_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
