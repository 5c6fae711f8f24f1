#!/usr/bin/env python3
"""A corpus read where it lies (WebDataset tar shards, plain and gzipped; Hugging Face parquet)
against the same corpus unpacked to files first, whole process against whole process.

The corpus is the real recordings of samples/real_speech (FLAC, MP3, WAV at 16-48 kHz, kept as
they are: nothing is converted) repeated to about ``--minutes`` of audio, each copy with ids
of its own (``c007-<utt>``), packed in id order into N shards of about equal counts:

* ``tar``: ``<id>.<flac|mp3|wav>`` and ``<id>.json`` (speaker, duration) per utterance;
* ``tar.gz``: the same, gzipped;
* ``parquet``: Hugging Face datasets' layout: ``id``, ``audio`` (struct of ``bytes`` and
  ``path``), ``speaker``, ``duration``; row groups of ``--row_group_rows`` rows (100: what
  ``datasets`` writes for audio) and its ``huggingface`` schema metadata.

Compared, at ``--nj`` jobs through ``utils/run.pl`` on the same cores, each way timed from the
start of its first process to the end of its last, runs alternated for ``--rounds`` rounds
(in place first in odd rounds, unpacked first in even ones), on the same files in the page
cache:

* in place: ``pyscripts/import_corpus.py`` over the shards, then the stage;
* unpacked: ``tar -xf`` per shard (parquet: a Python process writing each row's bytes to a
  file), a data dir over the files (wav.scp, utt2spk, spk2utt, utt2dur from the JSON members or
  columns), then the same stage.

The stages: ``scripts/extract_ssl_feats.sh --toolkit fbank`` (cheap: the reading shows) and
``scripts/extract_spk_embed.sh --toolkit resemblyzer`` (the offline default speaker model).
Each toolkit runs once, untimed, before the first round. Printed: each way's wall times and
median, the ratio in place / unpacked (of the medians, and of each round's pair), the stage
alone in each way, the CPU seconds of all the processes of each way (user + system: less
sensitive than wall time to other work on a shared machine), the extra disk of each way
(``du -sB1`` of what it writes besides the stage's outputs), the outputs of the two ways
compared, and from every in-place run each job's ``bytes_read`` (its ``done.<job>`` record)
over the bytes of the shards its input names. Then, in place with the first toolkit, each
format at each of ``--shard_counts`` shards: the jobs' peak memory (their logs' "peak memory"
line), MB read and bytes read over shard bytes, with the unpacked files' jobs beside them;
parquet twice: row groups of ``--row_group_rows`` (fewer where a shard holds fewer rows), and
row groups of one size at every shard count.

    tools/venv/bin/python bench/shards.py       # 30 min of audio, 2 rounds
    # bench/RESULTS.md: 20 min on 2 cores with other work beside it (load average 4)
    tools/venv/bin/python bench/shards.py --minutes 60 --rounds 4 --shards 16 \\
        --shard_counts 4,16,64 --toolkits fbank,resemblyzer
"""

import argparse
import io
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "real_speech"
sys.path.insert(0, str(REPO))

FORMATS = {"tar": ("webdataset", ".tar"), "tar.gz": ("webdataset", ".tar.gz"),
           "parquet": ("hf", ".parquet")}
STAGES = {"fbank": "extract_ssl_feats.sh", "resemblyzer": "extract_spk_embed.sh"}
HF_FEATURES = {"info": {"features": {"id": {"dtype": "string", "_type": "Value"},
                                     "audio": {"_type": "Audio"},
                                     "speaker": {"dtype": "string", "_type": "Value"},
                                     "duration": {"dtype": "float64", "_type": "Value"}}}}


def table(path: Path) -> dict:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())


def corpus(minutes: float):
    """[(id, source file, speaker, duration)]: the samples repeated to ``minutes`` of audio, in
    id order (the order they are packed in)."""
    wav, spk, dur = (table(SAMPLES / name) for name in ("wav.scp", "utt2spk", "utt2dur"))
    total = sum(float(d) for d in dur.values())
    copies = max(1, math.ceil(minutes * 60 / total))
    return [(f"c{copy:03d}-{utt}", SAMPLES / wav[utt].strip(), spk[utt].strip(),
             float(dur[utt])) for copy in range(copies) for utt in sorted(wav)]


def pack(utts, fmt: str, shards: int, dest: Path, row_group_rows: int) -> list:
    """The corpus as ``shards`` shards of ``fmt`` in ``dest``; returns their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    suffix = FORMATS[fmt][1]
    paths = []
    for s in range(shards):
        part = utts[len(utts) * s // shards:len(utts) * (s + 1) // shards]
        path = dest / f"shard-{s:05d}{suffix}"
        paths.append(path)
        if fmt == "parquet":
            write_parquet(part, path, row_group_rows)
            continue
        with tarfile.open(path, "w:gz" if fmt == "tar.gz" else "w") as tar:
            for utt, source, speaker, duration in part:
                meta = json.dumps({"speaker": speaker, "duration": duration}).encode()
                for name, data in ((f"{utt}{source.suffix}", source.read_bytes()),
                                   (f"{utt}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
    return paths


def write_parquet(part, path: Path, row_group_rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"id": [u for u, *_ in part],
               "audio": [{"bytes": src.read_bytes(), "path": src.name} for _, src, _, _ in part],
               "speaker": [s for _, _, s, _ in part],
               "duration": [d for *_, d in part]}
    schema = pa.schema([("id", pa.string()),
                        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("speaker", pa.string()), ("duration", pa.float64())],
                       metadata={"huggingface": json.dumps(HF_FEATURES)})
    # No dictionary for the audio: copies of one recording would be stored once (real corpora
    # hold no two equal recordings).
    pq.write_table(pa.table(columns, schema=schema), path, row_group_size=row_group_rows,
                   use_dictionary=["id", "speaker"])


# ------------------------------------------------------------------ the unpacking way's helpers

def write_data_dir(data: Path, rows) -> None:
    """A Kaldi data dir of rows (id, audio path, speaker, duration)."""
    data.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r[0].encode())
    for name, col in (("wav.scp", 1), ("utt2spk", 2), ("utt2dur", 3)):
        (data / name).write_text("".join(f"{r[0]} {r[col]}\n" for r in rows))
    speakers: dict = {}
    for utt, _, spk, _ in rows:
        speakers.setdefault(spk, []).append(utt)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n"
                                          for s, u in sorted(speakers.items())))


def data_dir_of_files(audio: Path, data: Path) -> None:
    """The data dir over unpacked WebDataset members: ``<id>.<ext>`` and ``<id>.json``."""
    rows = []
    for path in audio.iterdir():
        if path.suffix == ".json":
            continue
        meta = json.loads(path.with_suffix(".json").read_text())
        rows.append((path.name.split(".", 1)[0], str(path), meta["speaker"], meta["duration"]))
    write_data_dir(data, rows)


def unpack_parquet(files, audio: Path, data: Path) -> None:
    """Each row's audio bytes to ``<audio>/<id><ext of its path>``, and the data dir over them."""
    import pyarrow.parquet as pq

    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for file in files:
        parquet = pq.ParquetFile(file)
        for group in range(parquet.num_row_groups):
            for row in parquet.read_row_group(group).to_pylist():
                path = audio / (row["id"] + os.path.splitext(row["audio"]["path"])[1])
                path.write_bytes(row["audio"]["bytes"])
                rows.append((row["id"], str(path), row["speaker"], row["duration"]))
    write_data_dir(data, rows)


# ------------------------------------------------------------------------------------- one run

def run(argv, env, what: str) -> float:
    """Runs ``argv``; returns its wall seconds; exits with its output if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{what} failed ({' '.join(map(str, argv))}):\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def disk_bytes(*paths: Path) -> int:
    """Bytes of disk ``paths`` take (``du -sB1``, blocks allocated)."""
    out = subprocess.run(["du", "-scB1", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def stage_argv(toolkit: str, nj: int, data: Path, out: Path) -> list:
    return [REPO / "scripts" / STAGES[toolkit], "--toolkit", toolkit, "--nj", str(nj),
            "--cmd", "run.pl", data, out]


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_way(way: str, fmt: str, shards: list, toolkit: str, nj: int, work: Path, env) -> dict:
    """Runs one way (``in place`` or ``unpacked``) end to end; returns its figures, ``cpu``
    the CPU seconds of all its processes (less sensitive than wall time to other work on the
    machine)."""
    data, audio, out = work / "data", work / "audio", work / "out"
    for path in (data, audio, out):
        shutil.rmtree(path, ignore_errors=True)
    python = sys.executable
    cpu = children_cpu()
    start = time.perf_counter()
    if way == "in place":
        run([python, REPO / "pyscripts" / "import_corpus.py", "--format", FORMATS[fmt][0],
             *shards, data], env, "import")
        extra = [data]
    elif fmt == "parquet":
        run([python, __file__, "--unpack_parquet", audio, data, *shards], env, "unpack")
        extra = [audio, data]
    else:
        audio.mkdir(parents=True)
        for shard in shards:
            run(["tar", "-xf", shard, "-C", audio], env, "tar -xf")
        run([python, __file__, "--data_dir_of_files", audio, data], env, "data dir")
        extra = [audio, data]
    prepared = time.perf_counter()
    stage = run(stage_argv(toolkit, nj, data, out), env, f"{toolkit} stage, {way}, {fmt}")
    wall = time.perf_counter() - start
    return {"wall": wall, "cpu": children_cpu() - cpu, "stage": stage, "prepare": prepared - start,
            "disk": disk_bytes(*extra), "jobs": jobs(out, nj), "out": out}


def jobs(out: Path, nj: int) -> list:
    """Per job: bytes read, bytes of the shards its input names, peak memory (MiB)."""
    split = out / f"split{nj}"
    figures = []
    for job in range(1, nj + 1):
        record = json.loads((split / f"done.{job}").read_text())
        shards = set()
        for line in (split / f"input.{job}").read_text().splitlines():
            entry = line.split(maxsplit=1)[1].strip()
            match = re.match(r"^(?:tar|parquet):(.+?\.(?:tar\.gz|tar|parquet)):", entry)
            if match:
                shards.add(match[1])
        log = (out / "log" / f"extract.{job}.log").read_text()
        figures.append({"read": record["bytes_read"], "audio_s": record["audio_seconds"],
                        "shard_bytes": sum(os.path.getsize(s) for s in shards),
                        "shards": len(shards),
                        "peak": float(re.findall(r"peak memory ([\d.]+) MiB", log)[-1])})
    return figures


def compare(a: Path, b: Path) -> str:
    """The largest difference between the utterance-level outputs of two runs."""
    import kaldiio
    import numpy as np

    scp = next(p.name for p in a.glob("*.scp") if not p.name.startswith("spk_"))
    x, y = dict(kaldiio.load_scp(str(a / scp))), dict(kaldiio.load_scp(str(b / scp)))
    if x.keys() != y.keys():
        return f"{scp}: different utterances ({len(x)} and {len(y)})"
    diff = max(float(np.abs(x[u] - y[u]).max()) for u in x)
    equal = all(np.array_equal(x[u], y[u]) for u in x)
    return f"{scp}: {len(x)} utterances, " + ("bitwise equal" if equal else
                                              f"max abs difference {diff:.3g}")


def ratio_range(figures) -> str:
    ratios = [j["read"] / j["shard_bytes"] for run_ in figures for j in run_["jobs"]]
    return f"{min(ratios):.4f}-{max(ratios):.4f}"


def pq_groups(path: Path) -> int:
    """Row groups of a parquet file (0 for any other shard)."""
    if path.suffix != ".parquet":
        return 0
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).num_row_groups


def listed(values, fmt: str = ".1f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


# ----------------------------------------------------------------------------------------- main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30, help="audio in the corpus")
    p.add_argument("--shards", type=int, default=16, help="shards of the timed comparison")
    p.add_argument("--shard_counts", default="4,16,64",
                   help="shard counts of the memory sweep (empty: none)")
    p.add_argument("--formats", default="tar,tar.gz,parquet")
    p.add_argument("--toolkits", default="fbank,resemblyzer")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--row_group_rows", type=int, default=100)
    p.add_argument("--work", default=str(REPO / "bench" / "data" / "shards"))
    p.add_argument("--unpack_parquet", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    p.add_argument("--data_dir_of_files", nargs=2, metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.unpack_parquet:  # the unpacking way's own process: <audio> <data> <file>...
        audio, data, *files = args.unpack_parquet
        unpack_parquet(files, Path(audio), Path(data))
        return 0
    if args.data_dir_of_files:
        data_dir_of_files(*map(Path, args.data_dir_of_files))
        return 0

    from speechdump.device import cpu_description

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    formats = args.formats.split(",")
    toolkits = args.toolkits.split(",")
    counts = [int(c) for c in args.shard_counts.split(",") if c]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{REPO / 'utils'}:"
                                f"{os.environ['PATH']}", LC_ALL="C")
    utts = corpus(args.minutes)
    audio_s = sum(d for *_, d in utts)
    sizes = {}
    packed = {}
    t = time.perf_counter()
    for n in sorted(set(counts) | {args.shards}):
        for fmt in formats:
            packed[fmt, n] = pack(utts, fmt, n, work / "corpus" / f"{fmt}_{n}",
                                  args.row_group_rows)
            sizes[fmt, n] = sum(os.path.getsize(s) for s in packed[fmt, n])
    # Parquet again with row groups of one size at every shard count (the rows a shard of the
    # largest count holds), so that the sweep tells shards from row groups.
    even_rows = max(1, len(utts) // max(counts)) if counts else 0
    if counts and "parquet" in formats:
        for n in counts:
            packed["parquet", n, even_rows] = pack(utts, "parquet", n,
                                                   work / "corpus" / f"parquet_{n}_{even_rows}",
                                                   even_rows)
    print(cpu_description())
    print(f"{os.cpu_count()} cores; --nj {args.nj} (run.pl); {args.rounds} rounds; load average "
          f"{listed(os.getloadavg(), '.2f')}")
    print(f"corpus: {len(utts)} utterances, {audio_s / 60:.1f} min of audio, "
          f"{mb(sum(s.stat().st_size for _, s, _, _ in utts))} of audio files; packed in "
          f"{time.perf_counter() - t:.0f} s: " +
          ", ".join(f"{fmt} x{n} {mb(size)}" for (fmt, n), size in sizes.items()), flush=True)

    # The timed comparison: in place against unpacked, alternated, after one untimed run of
    # each toolkit (the first run of a stage loads torch and the model from a cold disk).
    ways = ("in place", "unpacked")
    for tk in toolkits:
        one_way("in place", formats[0], packed[formats[0], args.shards], tk, args.nj,
                work / "runs" / "warm_up", env)
    results = {(tk, fmt, way): [] for tk in toolkits for fmt in formats for way in ways}
    agreement = {}
    for round_ in range(args.rounds):
        for tk in toolkits:
            for fmt in formats:
                for way in (ways if round_ % 2 == 0 else ways[::-1]):
                    base = work / "runs" / f"{tk}_{fmt}_{way.replace(' ', '_')}"
                    results[tk, fmt, way].append(
                        one_way(way, fmt, packed[fmt, args.shards], tk, args.nj, base, env))
                    print(f"  round {round_ + 1} {tk:11s} {fmt:7s} {way:8s} "
                          f"{results[tk, fmt, way][-1]['wall']:6.1f} s", flush=True)
                if round_ == 0:
                    agreement[tk, fmt] = compare(*(results[tk, fmt, w][-1]["out"] for w in ways))

    print(f"\n{args.shards} shards, {len(utts)} utterances, {audio_s / 60:.1f} min; wall s, "
          "median (per round); in place = import + stage, unpacked = unpack + data dir + stage; "
          "ratios in place / unpacked: of the medians (per round); CPU s of all processes\n")
    print("| stage | format | in place (import + stage) | unpacked (unpack + stage) | "
          "in place / unpacked | stage alone: in place / unpacked | CPU s: in place / unpacked | "
          "extra disk: in place | extra disk: unpacked | job bytes read / its shards' bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tk in toolkits:
        for fmt in formats:
            a, b = results[tk, fmt, "in place"], results[tk, fmt, "unpacked"]
            ma, mb_ = (statistics.median(r["wall"] for r in x) for x in (a, b))
            sa, sb = (statistics.median(r["stage"] for r in x) for x in (a, b))
            pa, pb = (statistics.median(r["prepare"] for r in x) for x in (a, b))
            ca, cb = (statistics.median(r["cpu"] for r in x) for x in (a, b))
            paired = [x["wall"] / y["wall"] for x, y in zip(a, b)]
            print(f"| {tk} | {fmt} | {ma:.1f} s ({listed(r['wall'] for r in a)}; "
                  f"import {pa:.1f}) | {mb_:.1f} s ({listed(r['wall'] for r in b)}; "
                  f"unpack {pb:.1f}) | **{ma / mb_:.2f}** ({listed(paired, '.2f')}) | "
                  f"{sa:.1f} / {sb:.1f} s: {sa / sb:.2f} | {ca:.1f} / {cb:.1f}: {ca / cb:.2f} | "
                  f"{a[0]['disk']:,} B | {b[0]['disk']:,} B | {ratio_range(a)} |")
    print()
    for (tk, fmt), text in agreement.items():
        print(f"outputs, {tk} {fmt}, in place against unpacked (round 1): {text}")

    # Memory and bytes read against the number of shards, in place, the first toolkit.
    if counts:
        tk = toolkits[0]
        print(f"\n{tk}, in place, one run per row; peak memory of each job (MiB); "
              "the unpacked files' jobs beside\n")
        print("| format | shards | shards per job | peak memory per job, MiB | MB read per job | "
              "job bytes read / its shards' bytes | stage wall s |")
        print("|---|---|---|---|---|---|---|")
        for fmt in formats:
            variants = [(fmt, (), fmt)]
            if fmt == "parquet":
                variants = [(fmt, (), f"parquet, row groups of <= {args.row_group_rows} rows"),
                            (fmt, (even_rows,), f"parquet, row groups of {even_rows} rows")]
            for fmt_, rows, label in variants:
                for n in counts:
                    r = one_way("in place", fmt_, packed[(fmt_, n, *rows)], tk, args.nj,
                                work / "runs" / f"sweep_{fmt_}_{n}", env)
                    groups = sum(pq_groups(s) for s in packed[(fmt_, n, *rows)])
                    print(f"| {label} | {n}{f' ({groups} row groups)' if groups else ''} | "
                          f"{', '.join(str(j['shards']) for j in r['jobs'])} | "
                          f"{listed((j['peak'] for j in r['jobs']), '.0f')} | "
                          f"{listed(j['read'] / 1e6 for j in r['jobs'])} | "
                          f"{ratio_range([r])} | {r['stage']:.1f} |", flush=True)
            plain = results[tk, fmt, "unpacked"]
            print(f"| {fmt}, unpacked to files | - | - | "
                  f"{listed((j['peak'] for j in plain[-1]['jobs']), '.0f')} | "
                  f"{listed(j['read'] / 1e6 for j in plain[-1]['jobs'])} | - | "
                  f"{plain[-1]['stage']:.1f} |")
    shutil.rmtree(work, ignore_errors=True)  # the packed corpora: GBs at an hour of audio
    print(f"\nwhole bench {time.perf_counter() - t:.0f} s; load average at the end "
          f"{listed(os.getloadavg(), '.2f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
