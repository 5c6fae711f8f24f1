#!/usr/bin/env python3
"""Quality tables: scripts/compute_quality.sh (the batched engine, whole process: start, jobs,
merge, tables) against a per-file loop a user would write (soundfile read, torchaudio resample
to 16 kHz, silero's own get_speech_timestamps with its model, then speechdump.quality's numpy
measures, one file at a time, in one process), on the sample recordings repeated to --minutes
of audio. Rounds alternate loop and stage; the table gives each round's wall seconds and the
loop/stage ratio, and how far the two agree (the same measures; regions from silero's
chunk-at-a-time loop against the batched one).

  bench/quality.py [--minutes 10] [--rounds 2] [--nj 1] [--loop_threads 1]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

LOOP = r"""
import sys
import numpy as np, soundfile, torch, torchaudio
from silero_vad import get_speech_timestamps, load_silero_vad
from speechdump.quality import clip_ratio, measure
threads = int(sys.argv[3])
model = load_silero_vad()  # (its import sets torch's threads to 1)
torch.set_num_threads(threads)
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        utt, path = line.split(maxsplit=1)
        decoded, rate = soundfile.read(path.strip(), dtype="float32", always_2d=True)
        wave = torch.from_numpy(decoded.mean(axis=1))
        if rate != 16000:
            wave = torchaudio.functional.resample(wave, rate, 16000)
        regions = get_speech_timestamps(wave, model, sampling_rate=16000)
        r = np.array([[x["start"], x["end"]] for x in regions], dtype=np.int64).reshape(-1, 2)
        v = measure(wave.numpy(), r, clip_ratio(decoded))
        out.write(utt + " " + " ".join(f"{x:.6g}" for x in v) + "\n")
"""


def make_data(dest: Path, minutes: float) -> int:
    from sample_corpus import corpus

    utts = sorted(corpus(minutes), key=lambda u: u.utt_id)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "wav.scp").write_text("".join(f"{u.utt_id} {u.source}\n" for u in utts))
    (dest / "utt2spk").write_text("".join(f"{u.utt_id} {u.utt_id}\n" for u in utts))
    (dest / "spk2utt").write_text("".join(f"{u.utt_id} {u.utt_id}\n" for u in utts))
    return len(utts)


def env():
    e = dict(os.environ, LC_ALL="C")
    e["PATH"] = f"{Path(sys.executable).parent}:{REPO / 'utils'}:{e['PATH']}"
    return e


def run_loop(data: Path, out: Path, threads: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", LOOP, str(data / "wav.scp"), str(out), str(threads)],
                   check=True, env=env(), capture_output=True)
    return time.perf_counter() - start


def run_stage(data: Path, out: Path, nj: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([str(REPO / "scripts" / "compute_quality.sh"), "--nj", str(nj), str(data),
                    str(out)], check=True, env=env(), capture_output=True)
    return time.perf_counter() - start


def agreement(loop_out: Path, stage_out: Path) -> str:
    from speechdump.quality import FIELDS

    loop = {u: np.array(v.split(), dtype=float) for u, v in
            (line.split(maxsplit=1) for line in loop_out.read_text().splitlines())}
    parts = []
    for i, field in enumerate(FIELDS):
        table = {u: float(v) for u, v in (line.split() for line in
                                          (stage_out / f"utt2{field}").read_text().splitlines())}
        diff = np.array([abs(table[u] - loop[u][i]) for u in loop])
        parts.append(f"{field} max |diff| {diff.max():.3g}")
    return "; ".join(parts)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--loop_threads", type=int, default=1,
                   help="torch threads of the loop (silero's import sets 1)")
    p.add_argument("--work", default=str(REPO / "bench" / "data" / "quality"))
    args = p.parse_args()
    work = Path(args.work)
    data = work / "data"
    shutil.rmtree(work, ignore_errors=True)
    n = make_data(data, args.minutes)
    print(f"{n} utterances, {args.minutes:g} min of the sample recordings; {os.cpu_count()} "
          f"CPUs; stage --nj {args.nj} (threads auto), loop {args.loop_threads} thread(s)")
    print(f"{'round':>5} {'loop s':>8} {'stage s':>8} {'loop/stage':>10}")
    ratios = []
    for r in range(args.rounds):
        loop_s = run_loop(data, work / "loop.txt", args.loop_threads)
        stage_s = run_stage(data, work / "stage", args.nj)
        ratios.append(loop_s / stage_s)
        print(f"{r + 1:>5} {loop_s:8.1f} {stage_s:8.1f} {ratios[-1]:10.2f}", flush=True)
    print(f"median loop/stage: {np.median(ratios):.2f}")
    print("agreement:", agreement(work / "loop.txt", work / "stage"))


if __name__ == "__main__":
    main()
