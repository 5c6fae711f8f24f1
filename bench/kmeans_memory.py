"""learn_kmeans's peak memory against the number of training frames: out of core, it stays flat.

The frames are 80-dim fbank of the real speech samples (26 utterances, 14822 frames), repeated:
the feats.scp of N frames lists their ark records again and again under new ids, the one of
10x N frames ten times as often (one ark on disk for both). Each training runs
``pyscripts/learn_kmeans.py`` in a fresh process; its peak RSS is that process's ru_maxrss
(``os.wait4``). Linux counts in it what the process held when it was forked, so the process
that forks them never imports torch: the features are made in a process of their own.
Holding the frames in memory, as the in-core training did, would cost the "frames in memory"
column on top of the baseline.

    tools/venv/bin/python bench/kmeans_memory.py [--frames 300000] [--n_clusters 100]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump.data import read_table  # noqa: E402
from speechdump.kaldi_io import num_frames  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"


def write_sample_fbank(work: Path, dim: int) -> None:
    """The samples' fbank in <work>/fbank.{ark,scp} (run in a process of its own)."""
    import torch
    import torchaudio

    from speechdump.audio import ResamplerCache, load_audio
    from speechdump.data import Utterance
    from speechdump.kaldi_io import write_ark_scp

    resamplers = ResamplerCache()
    matrices = {}
    for utt, path in read_table(str(SAMPLES / "wav.scp")).items():
        wave = load_audio(Utterance(utt, str(SAMPLES / path)), 16000, resamplers)
        matrices[utt] = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=dim, dither=0.0,
            sample_frequency=16000).numpy()
    write_ark_scp(str(work / "fbank.ark"), str(work / "fbank.scp"), matrices)


def sample_fbank(work: Path, dim: int) -> dict:
    """The samples' fbank in one ark: id -> (location, frames)."""
    subprocess.run([sys.executable, __file__, "--prepare", str(work), "--dim", str(dim)],
                   check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return {utt: (location, num_frames(location))
            for utt, location in read_table(str(work / "fbank.scp")).items()}


def repeated_scp(path: Path, records: dict, frames: int) -> int:
    """An scp listing the records again and again (new ids) until ``frames``; returns its
    frame count."""
    total, copy = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while total < frames:
            for utt, (location, count) in records.items():
                f.write(f"{utt}-rep{copy:05d} {location}\n")
                total += count
                if total >= frames:
                    break
            copy += 1
    return total


def train(scp: Path, km_dir: Path, args) -> tuple:
    """Peak RSS (MiB) and wall seconds of learn_kmeans.py in a fresh process."""
    command = [sys.executable, str(REPO / "pyscripts" / "learn_kmeans.py"), "--portion", "1",
               "--n_clusters", str(args.n_clusters), "--max_iter", str(args.max_iter),
               "--batch_size", str(args.batch_size), "--num_threads", "1", str(scp), str(km_dir)]
    log = km_dir.parent / f"{km_dir.name}.log"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        # Reaped here, not by Popen, for the child's own resource usage.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    out = log.read_text(encoding="utf-8")
    if proc.returncode != 0:
        raise SystemExit(f"learn_kmeans.py failed:\n{out}")
    return usage.ru_maxrss / 1024, wall, out  # Linux: KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300000, help="N (the second run: 10 x N)")
    p.add_argument("--dim", type=int, default=80, help="fbank bins")
    p.add_argument("--n_clusters", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=10000)
    p.add_argument("--max_iter", type=int, default=100, help="as learn_kmeans.sh")
    p.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prepare:
        write_sample_fbank(Path(args.prepare), args.dim)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        records = sample_fbank(work, args.dim)
        for scale in (1, 10):
            scp = work / f"feats_{scale}.scp"
            frames = repeated_scp(scp, records, scale * args.frames)
            utts = sum(1 for _ in open(scp, encoding="utf-8"))
            peak, wall, out = train(scp, work / f"km_{scale}", args)
            rows.append((frames, utts, peak, wall, out))
    print(f"learn_kmeans.py --n_clusters {args.n_clusters} --batch_size {args.batch_size} "
          f"--max_iter {args.max_iter} --portion 1 --num_threads 1, {args.dim}-dim fbank of the "
          "real speech samples, repeated\n")
    print("| training frames | utterances | frames in memory (in core) | peak RSS | wall time |")
    print("|---|---|---|---|---|")
    for frames, utts, peak, wall, _ in rows:
        print(f"| {frames} | {utts} | {frames * args.dim * 4 / 2 ** 20:.0f} MiB | "
              f"{peak:.0f} MiB | {wall:.1f} s |")
    print(f"\npeak RSS at 10x the frames: {rows[1][2] / rows[0][2]:.3f}x")
    for *_, out in rows:
        print(next(line for line in out.splitlines() if "centers of dimension" in line))


if __name__ == "__main__":
    main()
