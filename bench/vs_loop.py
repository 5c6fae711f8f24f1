#!/usr/bin/env python3
"""The whole stage against the plain per-utterance loop a user would otherwise run
(bench/plain_loop.py), whole process against whole process, alternated.

The corpus is the real recordings of samples/real_speech repeated ``--copies`` times (5: 130
utterances, 744 s, 16-48 kHz, FLAC/MP3/WAV). Each round runs every command once, in an order
rotated by one each round; each run writes to a fresh directory. Printed: every wall time, the
median per command, its ratio to the loop's median, and the engine alone (the job log's own
time, from its first utterance to its last write) against the loop alone (``loop_s``).

    tools/venv/bin/python bench/vs_loop.py --toolkits speechbrain,ssl --rounds 3
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import soundfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models import build  # noqa: E402  (bench/: the models at real size)
from speechdump.device import cpu_description  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"


def make_corpus(dest: Path, copies: int) -> Path:
    """The sample recordings repeated, as a Kaldi data dir (wav.scp, utt2spk, spk2utt, utt2dur)."""
    dest.mkdir(parents=True, exist_ok=True)
    tables = {name: dict(line.split(maxsplit=1) for line in
                         (SAMPLES / name).read_text().splitlines())
              for name in ("wav.scp", "utt2spk", "utt2dur")}
    lines = {name: [] for name in tables}
    for copy in range(copies):
        for utt in sorted(tables["wav.scp"]):
            new = f"c{copy}-{utt}"
            lines["wav.scp"].append(f"{new} {SAMPLES / tables['wav.scp'][utt]}")
            lines["utt2spk"].append(f"{new} {tables['utt2spk'][utt]}")
            lines["utt2dur"].append(f"{new} {tables['utt2dur'][utt]}")
    for name, rows in lines.items():
        (dest / name).write_text("".join(f"{row}\n" for row in sorted(rows)))
    speakers: dict = {}
    for row in sorted(lines["utt2spk"]):
        utt, spk = row.split()
        speakers.setdefault(spk, []).append(utt)
    (dest / "spk2utt").write_text("".join(f"{spk} {' '.join(utts)}\n"
                                          for spk, utts in sorted(speakers.items())))
    return dest


# toolkit -> the model of bench/models.py it runs, and the stage that extracts it
TOOLKITS = {"speechbrain": ("ecapa", "extract_spk_embed.sh"),
            "resemblyzer": ("resemblyzer", "extract_spk_embed.sh"),
            "ssl": ("hubert-layer6", "extract_ssl_feats.sh"),
            "whisper": ("whisper-base", "extract_ssl_feats.sh")}


def commands(toolkit: str, model, data: Path, layer: int, njs, layouts):
    """{name: argv (its out dir last, as {out})} of the runs compared."""
    python = sys.executable
    loop = [python, str(REPO / "bench" / "plain_loop.py"), toolkit, str(model or "-"),
            str(data / "wav.scp"), "{out}/loop", "--layer", str(layer)]
    script = TOOLKITS[toolkit][1]
    stage = [str(REPO / "scripts" / script), "--toolkit", toolkit,
             *(["--model", str(model)] if model else [])]
    if script == "extract_ssl_feats.sh":
        stage += ["--extractor_opts", f"--layers {layer}"]
    runs = {"loop": loop}
    for nj in njs:
        runs[f"stage --nj {nj}"] = [*stage, "--nj", str(nj), str(data), "{out}"]
    for layout in layouts:
        runs[f"stage {layout}"] = [*stage, "--nj", "1", "--cpu_layout", layout, str(data),
                                   "{out}"]
    return runs


def engine_seconds(out: Path) -> float:
    """The longest job's own time (utterances in to last write), from its log."""
    times = [float(re.search(r"s of audio in ([\d.]+) s", log.read_text())[1])
             for log in (out / "log").glob("extract.*.log")]
    return max(times)


def check_outputs(toolkit: str, data: Path, loop_out: Path, stage_out: Path, layer: int) -> str:
    """How the stage's outputs compare with the loop's: over the 16 kHz recordings (the same
    samples in), and over all (the loop resamples with torchaudio's default sinc, the stage
    with speechdump's Kaiser-windowed one)."""
    loop = dict(kaldiio.load_scp(str(loop_out / "loop.scp")))
    scp = (f"{toolkit}.scp" if TOOLKITS[toolkit][1] == "extract_spk_embed.sh"
           else f"feats_layer{layer}.scp")
    stage = dict(kaldiio.load_scp(str(stage_out / scp)))
    native = {utt for utt, path in (line.split(maxsplit=1) for line in
                                    (data / "wav.scp").read_text().splitlines())
              if soundfile.info(path.strip()).samplerate == 16000}
    if scp == f"{toolkit}.scp":
        def score(utts):
            return min(float(loop[u] @ stage[u] / np.linalg.norm(loop[u])
                             / np.linalg.norm(stage[u])) for u in utts)
        what = "lowest cosine"
    else:
        def score(utts):
            return max(float(np.abs(loop[u] - stage[u]).max() / np.abs(loop[u]).max())
                       for u in utts)
        what = "max difference / max |value|"
    return (f"{what} stage vs loop: {score(native):.6g} on the 16 kHz recordings, "
            f"{score(loop):.6g} on all (resamplers differ)")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--toolkits", default=",".join(TOOLKITS))
    p.add_argument("--nj", default="1", help="the stage's --nj values, comma-separated")
    p.add_argument("--layouts", default="",
                   help="also the stage at --nj 1 with each of these --cpu_layout values")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=5)
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--work", default=str(REPO / "bench" / "data" / "vs_loop"))
    args = p.parse_args()
    work = Path(args.work)
    data = make_corpus(work / "data", args.copies)
    audio = sum(float(line.split()[1]) for line in (data / "utt2dur").read_text().splitlines())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{REPO / 'utils'}:"
                                f"{os.environ['PATH']}", LC_ALL="C")
    print(cpu_description())
    print(f"corpus: {len(data.joinpath('wav.scp').read_text().splitlines())} utterances, "
          f"{audio:.0f} s of audio; {os.cpu_count()} cores; {args.rounds} rounds")
    for toolkit in args.toolkits.split(","):
        name = TOOLKITS[toolkit][0]
        model = work / "models" / name
        model = model if model.exists() else build(name, model)  # None: Resemblyzer's own
        runs = commands(toolkit, model, data, args.layer, args.nj.split(","),
                        [x for x in args.layouts.split(",") if x])
        names = list(runs)
        walls = {name: [] for name in names}
        engine, loop_alone = [], []
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                out = work / "out" / name.replace(" ", "_").replace("-", "")
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                argv = [a.replace("{out}", str(out)) for a in runs[name]]
                start = time.perf_counter()
                proc = subprocess.run(argv, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if proc.returncode:
                    sys.exit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
                walls[name].append(wall)
                if name == "loop":
                    loop_alone.append(float(re.search(r"loop_s ([\d.]+)", proc.stdout)[1]))
                elif name == "stage --nj 1":
                    engine.append(engine_seconds(out))
            if round_ == 0:
                outs = work / "out"
                agreement = check_outputs(toolkit, data, outs / "loop", outs / "stage_nj_1",
                                          args.layer)
                print(f"{toolkit}: {agreement}")
        base = statistics.median(walls["loop"])
        print(f"{toolkit}: wall seconds per round (order rotated each round)")
        for name in names:
            median = statistics.median(walls[name])
            print(f"  {name:14s} {' '.join(f'{w:6.1f}' for w in walls[name])} | median "
                  f"{median:6.1f} s | {median / base:.2f} of the loop")
        ratio = statistics.median(engine) / statistics.median(loop_alone)
        print(f"  engine alone (stage --nj 1, its job's time) {statistics.median(engine):.1f} s "
              f"against the loop alone {statistics.median(loop_alone):.1f} s: {ratio:.2f}")


if __name__ == "__main__":
    main()
