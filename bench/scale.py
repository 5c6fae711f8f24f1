#!/usr/bin/env python3
"""Scale benchmarks of the speaker stage: memory and time against corpus size, the merge of a
million-line scp, the stage against the model's forward time alone, and jobs against threads.

Each part runs the real stage (scripts/extract_spk_embed.sh with run.pl) on data dirs built by
bench/make_scale_corpus.sh (segments of the real sample recordings), and prints its figures:

    python bench/scale.py corpus  [--sizes 1000,10000,100000] [--toolkit resemblyzer]
    python bench/scale.py merge   [--lines 1000000] [--dim 256]
    python bench/scale.py forward [--toolkits resemblyzer,speechbrain,espnet,rawnet]
    python bench/scale.py jobs    [--toolkits resemblyzer,speechbrain] [--utts 1000]
    python bench/scale.py window  [--utts 100] [--bounds 1e9,600,200]

Work files go to a temporary directory under --work_dir (default: the system's), removed at
the end. Bad utterances of the corpus (segments with no speech left after a toolkit's silence
trimming, as real corpora have) are skipped and counted (--skip_bad true).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests

from speechdump.kaldi_io import ArkScpWriter  # noqa: E402
from speechdump.extractors.base import Stream  # noqa: E402

STAGE = REPO / "scripts" / "extract_spk_embed.sh"
SSL_STAGE = REPO / "scripts" / "extract_ssl_feats.sh"
PEAK = re.compile(r"(\d+) utterances, ([\d.]+) s of audio in ([\d.]+) s; (\d+) bad; "
                  r"peak memory (\d+) MiB")


def make_corpus(num_utts: int, dest: Path) -> Path:
    subprocess.run([str(REPO / "bench" / "make_scale_corpus.sh"), str(num_utts), str(dest)],
                   check=True, stdout=subprocess.DEVNULL)
    return dest


def run_stage(data: Path, out: Path, toolkit: str, model: str = "", nj: int = 1,
              num_threads: int = 1, extra=(), stage: Path = STAGE) -> dict:
    """Runs the stage; returns its wall time and the jobs' figures from their logs."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["bash", str(stage), "--toolkit", toolkit, "--nj", str(nj),
           "--num_threads", str(num_threads), "--skip_bad", "true", "--python", sys.executable,
           *(["--model", model] if model else []), *extra, str(data), str(out)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"stage failed:\n{result.stderr[-3000:]}")
    jobs = []
    for log in sorted((out / "log").glob("extract.*.log")):
        match = PEAK.search(log.read_text())
        if not match:
            sys.exit(f"{log}: no job summary line")
        utts, audio, seconds, bad, peak = match.groups()
        jobs.append(dict(utts=int(utts), audio=float(audio), seconds=float(seconds),
                         bad=int(bad), peak_mib=int(peak)))
    return dict(wall=wall, jobs=jobs, utts=sum(j["utts"] for j in jobs),
                audio=sum(j["audio"] for j in jobs), bad=sum(j["bad"] for j in jobs),
                peak_mib=max(j["peak_mib"] for j in jobs))


def corpus_scaling(args, work: Path) -> None:
    """Peak RSS of a job and wall time per utterance against corpus size."""
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        data = make_corpus(size, work / f"data_{size}")
        run = run_stage(data, work / f"out_{size}", args.toolkit, nj=args.nj,
                        num_threads=args.num_threads)
        shutil.rmtree(work / f"out_{size}")
        rows.append((size, run))
        print(f"{size} utts: stage {run['wall']:.1f} s, {1000 * run['wall'] / size:.2f} ms/utt, "
              f"{run['audio'] / run['wall']:.1f} s of audio/s, job peak RSS "
              f"{run['peak_mib']} MiB, {run['bad']} bad", flush=True)
    base_size, base = rows[0]
    print(f"\n| utterances | hours of audio | stage wall | ms per utterance | ratio to "
          f"{base_size} | job extraction, ms per utterance | job peak RSS | RSS ratio to "
          f"{base_size} | bad |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, run in rows:
        per_utt = run["wall"] / size
        job_per_utt = max(j["seconds"] for j in run["jobs"]) / (size / len(run["jobs"]))
        print(f"| {size} | {run['audio'] / 3600:.2f} | {run['wall']:.1f} s | "
              f"{1000 * per_utt:.2f} | {per_utt / (base['wall'] / base_size):.2f} | "
              f"{1000 * job_per_utt:.2f} | {run['peak_mib']} MiB | "
              f"{run['peak_mib'] / base['peak_mib']:.2f} | {run['bad']} |")


def merge_million(args, work: Path) -> None:
    """merge_outputs.py on two job shards of ``lines`` ids in all, against GNU sort."""
    split, out = work / "split2", work / "out"
    split.mkdir()
    out.mkdir()
    keys = [f"spk{i % 5000:04d}-utt{i:07d}" for i in range(args.lines)]
    keys.sort()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, args.dim)).astype(np.float32)
    start = time.perf_counter()
    for job in (1, 2):  # interleaved shards: the merge has to restore the reference order
        shard = keys[job - 1::2]
        with ArkScpWriter(str(split / f"x.{job}.ark"), str(split / f"x.{job}.scp")) as writer:
            for i, key in enumerate(shard):
                writer.write(key, vectors[i % len(vectors)])
        (split / f"utt2dur.{job}").write_text("".join(f"{k} 3.0000\n" for k in shard))
        (split / f"bad_utts.{job}").write_text("")
        (split / f"done.{job}").write_text(json.dumps(
            {"config": {}, "streams": [dict(Stream().to_record(), stem="x")],
             "utterances": len(shard),
             "bad": 0, "audio_seconds": 3.0 * len(shard)}))
    text = work / "text"
    text.write_text("".join(f"{k} a b c\n" for k in keys))
    (work / "utt2spk").write_text("".join(f"{k} {k.split('-')[0]}\n" for k in keys))
    os.sync()  # the jobs' gigabyte goes to disk now, not while the merge is timed
    print(f"wrote {args.lines} vectors of dimension {args.dim} in 2 job shards "
          f"({time.perf_counter() - start:.1f} s)", flush=True)

    both = work / "both.scp"
    with open(both, "w") as f:
        for job in (1, 2):
            f.write((split / f"x.{job}.scp").read_text())
    env = dict(os.environ, LC_ALL="C")
    start = time.perf_counter()
    subprocess.run(["sort", "-k1,1", "-o", str(work / "sorted.scp"), str(both)], env=env,
                   check=True)
    sort_wall = time.perf_counter() - start

    start = time.perf_counter()
    merged = subprocess.run(
        [sys.executable, str(REPO / "pyscripts" / "merge_outputs.py"), "--tag", "x", "--nj", "2",
         "--source_ids", str(text), "--text", str(text), "--utt2spk", str(work / "utt2spk"),
         "--start_time", str(time.time()),
         "--spk_means", "true", str(split), str(out)], capture_output=True, text=True)
    merge_wall = time.perf_counter() - start
    if merged.returncode != 0:
        sys.exit(f"merge failed:\n{merged.stderr}")
    assert (out / "x.scp").read_text() == (work / "sorted.scp").read_text()
    print(merged.stdout.strip())
    print(f"\n| {args.lines} lines, dimension {args.dim} | wall |\n|---|---|\n"
          f"| GNU sort -k1,1 (LC_ALL=C) of the concatenated shards | {sort_wall:.2f} s |\n"
          f"| merge_outputs.py: merge, align with text, validate every array, utt2dur, "
          f"speaker means | "
          f"{merge_wall:.2f} s ({merge_wall / sort_wall:.1f}x sort) |")


def build_model(toolkit: str, dest: Path) -> str:
    """A local model of the toolkit's real architecture ('' for Resemblyzer's own weights)."""
    if toolkit == "speechbrain":
        from build_speechbrain_model import build
        return str(build(dest, kind="ecapa", channels=[1024, 1024, 1024, 1024, 3072]))
    if toolkit in ("espnet", "rawnet"):
        from build_espnet_model import build
        return str(build(dest, encoder="rawnet3" if toolkit == "rawnet" else "ecapa_tdnn",
                         small=False))
    return ""


def forward_only(toolkit: str, model: str, data: Path) -> Tuple[float, float]:
    """The model's forward time alone on the engine's batches (its default options, as the
    stage runs it), everything decoded and prepared beforehand; and the time that decoding and
    preparing took (one thread)."""
    import torch
    from speechdump import engine
    from speechdump.batching import plan_batches
    from speechdump.data import read_utterances
    from speechdump.extractors import load_extractor

    torch.set_num_threads(1)
    options = engine.EngineOptions()
    extractor = load_extractor(toolkit, model or None, "cpu")
    loader = engine._Loader(extractor, options)
    utterances = read_utterances(str(data / "wav.scp"), str(data / "segments"))
    start = time.perf_counter()
    loaded = list(map(loader, utterances))
    load_seconds = time.perf_counter() - start
    first = next(p for _, p, _ in loaded if not isinstance(p, Exception))
    extractor.forward([first])  # one-time kernel set-up stays untimed
    cap = min(options.batch_size, extractor.max_batch_size or options.batch_size)
    seconds = 0.0
    for window in engine._windows(loaded, options.sort_window, options.sort_window_seconds):
        items = [p for _, p, _ in window if not isinstance(p, Exception)]
        costs = [extractor.cost(item) for item in items]
        for indices in plan_batches(costs, options.batch_seconds, cap, extractor.batch_cost,
                                    extractor.equal_lengths_only):
            batch = [items[i] for i in indices]
            start = time.perf_counter()
            extractor.forward(batch)
            seconds += time.perf_counter() - start
    return seconds, load_seconds


def stage_vs_forward(args, work: Path) -> None:
    """Stage wall time (one job, one torch thread) against the forward passes alone."""
    data = make_corpus(args.utts, work / "data")
    print("\n| toolkit | utterances | stage wall | job extraction wall | forward alone | "
          "stage / forward | job / forward | decode + prepare alone, one thread |"
          "\n|---|---|---|---|---|---|---|---|")
    for toolkit in args.toolkits.split(","):
        model = build_model(toolkit, work / f"model_{toolkit}")
        run = run_stage(data, work / f"out_{toolkit}", toolkit, model)
        forward, load = forward_only(toolkit, model, data)
        job = run["jobs"][0]["seconds"]
        print(f"| {toolkit} | {run['utts']} | {run['wall']:.1f} s | {job:.1f} s | "
              f"{forward:.1f} s | {run['wall'] / forward:.2f}x | {job / forward:.2f}x | "
              f"{load:.1f} s |",
              flush=True)


def jobs_vs_threads(args, work: Path) -> None:
    """--nj 2 --num_threads 1 against --nj 1 --num_threads 1 on the same corpus, and the most
    two jobs could gain on two cores: all the CPU work of one job (its forward passes, and
    decoding and preparing, each timed alone) shared by both cores, plus the fixed start."""
    data = make_corpus(args.utts, work / "data")
    print(f"\n| toolkit, {args.utts} utterances | --nj 1 --num_threads 1 | --nj 2 --num_threads 1 "
          f"| speed-up | forward alone | decode + prepare alone | fixed start (--nj 2) "
          f"| CPU-bound ceiling, 2 cores | share of it |\n|---|---|---|---|---|---|---|---|---|")
    for toolkit in args.toolkits.split(","):
        model = build_model(toolkit, work / f"model_{toolkit}")
        one = run_stage(data, work / "out_nj1", toolkit, model, nj=1)
        two = run_stage(data, work / "out_nj2", toolkit, model, nj=2)
        forward, load = forward_only(toolkit, model, data)
        # Process start, model load and merge: the stage's time outside its slowest job's loop.
        fixed = two["wall"] - max(job["seconds"] for job in two["jobs"])
        ceiling = one["wall"] / ((forward + load) / 2 + fixed)
        speedup = one["wall"] / two["wall"]
        print(f"| {toolkit} | {one['wall']:.1f} s | {two['wall']:.1f} s | {speedup:.2f}x | "
              f"{forward:.1f} s | {load:.1f} s | {fixed:.1f} s | {ceiling:.2f}x | "
              f"{speedup / ceiling:.0%} |", flush=True)


def long_corpus(num_utts: int, dest: Path) -> Path:
    """``num_utts`` segments of 12-20 s over one recording: the sample recordings end to end at
    16 kHz (real speech, longer utterances than the scale corpus has)."""
    import soundfile
    from speechdump.audio import ResamplerCache, load_audio
    from speechdump.data import Utterance, read_utterances

    samples = REPO / "samples" / "real_speech"
    resamplers = ResamplerCache()
    waves = [load_audio(Utterance(utt.utt_id, str(samples / utt.source)), 16000, resamplers)
             for utt in read_utterances(str(samples / "wav.scp"))]
    dest.mkdir(parents=True)
    soundfile.write(dest / "all.wav", np.concatenate(waves), 16000, subtype="PCM_16")
    length = sum(len(w) for w in waves) / 16000
    rng = np.random.default_rng(0)
    lines = []
    for i in range(num_utts):
        seconds = rng.uniform(12.0, 20.0)
        start = rng.uniform(0.0, length - seconds)
        lines.append(f"long-{i:05d} all {start:.2f} {start + seconds:.2f}\n")
    (dest / "wav.scp").write_text(f"all {dest / 'all.wav'}\n")
    (dest / "segments").write_text("".join(lines))
    (dest / "utt2spk").write_text("".join(f"{line.split()[0]} spk\n" for line in lines))
    (dest / "spk2utt").write_text("spk " + " ".join(line.split()[0] for line in lines) + "\n")
    return dest


def window_memory(args, work: Path) -> None:
    """Peak RSS of an SSL job keeping every layer frame by frame, on long utterances, with and
    without the seconds bound on its sort windows."""
    from build_ssl_model import build

    data = long_corpus(args.utts, work / "data")
    model = str(build(work / "hubert", "hubert", "group", small=False))
    print("\n| --sort_window_seconds | utterances | audio | job wall | job peak RSS |"
          "\n|---|---|---|---|---|")
    for bound in args.bounds.split(","):
        run = run_stage(data, work / "out", "ssl", model, num_threads=args.num_threads,
                        extra=["--extractor_opts", "--layers all", "--sort_window_seconds", bound],
                        stage=SSL_STAGE)
        job = run["jobs"][0]
        print(f"| {bound} | {run['utts']} | {run['audio']:.0f} s | {job['seconds']:.1f} s | "
              f"{run['peak_mib']} MiB |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work_dir", default=None, help="where the temporary files go")
    parts = p.add_subparsers(dest="part", required=True)
    corpus = parts.add_parser("corpus", help=corpus_scaling.__doc__)
    corpus.add_argument("--sizes", default="1000,10000,100000")
    corpus.add_argument("--toolkit", default="resemblyzer")
    corpus.add_argument("--nj", type=int, default=2)
    corpus.add_argument("--num_threads", type=int, default=1)
    merge = parts.add_parser("merge", help=merge_million.__doc__)
    merge.add_argument("--lines", type=int, default=1_000_000)
    merge.add_argument("--dim", type=int, default=256)
    forward = parts.add_parser("forward", help=stage_vs_forward.__doc__)
    forward.add_argument("--toolkits", default="resemblyzer,speechbrain,espnet,rawnet")
    forward.add_argument("--utts", type=int, default=1000)
    jobs = parts.add_parser("jobs", help=jobs_vs_threads.__doc__)
    jobs.add_argument("--toolkits", default="resemblyzer,speechbrain")
    jobs.add_argument("--utts", type=int, default=1000)
    window = parts.add_parser("window", help=window_memory.__doc__)
    window.add_argument("--utts", type=int, default=100)
    window.add_argument("--bounds", default="1e9,600,200")
    window.add_argument("--num_threads", type=int, default=2)
    args = p.parse_args()

    run = {"corpus": corpus_scaling, "merge": merge_million, "forward": stage_vs_forward,
           "jobs": jobs_vs_threads, "window": window_memory}[args.part]
    print(f"{args.part}: {os.cpu_count()} cores, {vars(args)}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="speechdump-scale.") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
