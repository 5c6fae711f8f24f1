#!/usr/bin/env python3
"""Random-access reading at training time: kaldiio ``load_scp``, our ``ScpDataset``, the
indexed shards (``ShardReader`` / ``ShardDataset``) and Lhotse cuts over our arks.

Builds, from the real speech samples (no network): 40-dim fbank of every recording, k-means
tokens of it (64 centers, a few numpy Lloyd passes), then
* ``--token_utts`` utterances of tokens (default 100k): slices of 50-400 frames of the real
  token sequences at random offsets, int32 vectors in an ark/scp, in shards, and in Lhotse cuts
  (segments of the real recordings, tokens attached as a custom TemporalArray);
* ``--feat_utts`` utterances of frame features (default 10k): the same kind of slices of the
  fbank, float32 matrices, likewise (Lhotse: ``cut.features`` through its Kaldi storage).
Then reads ``--reads`` random items (with replacement, the same indices for every reader) with
each reader in this process and prints items/s, MB/s of array data, and the ratios to kaldiio.

    tools/venv/bin/python bench/readers.py
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch
import torchaudio

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "real_speech"

from speechdump.audio import ResamplerCache, load_audio  # noqa: E402
from speechdump.data import Utterance, read_table  # noqa: E402
from speechdump.extractors.base import FLOAT, FRAMES, INT, TOKENS, Stream  # noqa: E402
from speechdump.job import write_merged_record  # noqa: E402
from speechdump.kaldi_io import ArkScpWriter, read_scp_arrays  # noqa: E402
from speechdump.readers import ScpDataset, ShardDataset, ShardReader  # noqa: E402
from speechdump.shards import write_shards  # noqa: E402


def real_fbank() -> dict:
    resamplers = ResamplerCache()
    out = {}
    for reco, path in read_table(str(SAMPLES / "wav.scp")).items():
        wave = load_audio(Utterance(reco, str(SAMPLES / path)), 16000, resamplers)
        out[reco] = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=40, dither=0.0,
            sample_frequency=16000).numpy()
    return out


def kmeans_tokens(fbank: dict, k: int = 64, passes: int = 8) -> dict:
    frames = np.concatenate(list(fbank.values()))
    rng = np.random.default_rng(0)
    centers = frames[rng.choice(len(frames), k, replace=False)]
    for _ in range(passes):
        labels = ((frames[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
        for c in range(k):
            if (labels == c).any():
                centers[c] = frames[labels == c].mean(0)
    return {reco: ((f[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1).astype(np.int32)
            for reco, f in fbank.items()}


def build(base: Path, name: str, source: dict, count: int, stream: Stream, seed: int):
    """``count`` slices of ``source`` as a stage output <base>/<name> (scp, meta.json) and a
    data dir <base>/<name>_data whose segments are the slices (10 ms frames)."""
    rng = np.random.default_rng(seed)
    recos = sorted(source)
    out, data = base / name, base / f"{name}_data"
    out.mkdir()
    data.mkdir()
    segments = []
    with ArkScpWriter(str(out / f"{name}.ark"), str(out / f"{name}.scp")) as writer:
        for i in range(count):
            reco = recos[i % len(recos)]
            total = len(source[reco])
            length = int(rng.integers(50, min(400, total) + 1))
            start = int(rng.integers(0, total - length + 1))
            utt = f"{reco}-{i:06d}"
            writer.write(utt, source[reco][start:start + length])
            end = (start + length) / 100 + 0.015  # the fbank window's last 15 ms
            segments.append(f"{utt} {reco} {start / 100:.2f} {end:.3f}\n")
    record = {"stem": name, **stream.__dict__}
    write_merged_record(str(out), {"tag": name, "config": {"bench": name}, "streams": [record]})
    (data / "segments").write_text("".join(segments))
    (data / "wav.scp").write_text("".join(f"{reco} {SAMPLES / path}\n" for reco, path in
                                          read_table(str(SAMPLES / "wav.scp")).items()))
    return out / f"{name}.scp", data


def timed(label: str, keys, get, reads: int):
    """Reads ``keys`` through ``get``; returns (label, items/s, MB/s)."""
    start = time.perf_counter()
    nbytes = 0
    for key in keys:
        nbytes += np.asarray(get(key)).nbytes
    seconds = time.perf_counter() - start
    return label, reads / seconds, nbytes / seconds / 1e6


def bench(kind: str, scp: Path, data: Path, base: Path, reads: int, seed: int, lhotse_reads):
    ids = list(read_table(str(scp)))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ids), reads)
    keys = [ids[i] for i in picks]
    t = time.perf_counter()
    if kind == "tokens":
        write_shards(read_scp_arrays(str(scp)), str(base / f"{kind}_shards"), "tokens",
                     shard_size=25000, vocab_size=64, frame_shift=0.01, source=str(scp))
    else:
        write_shards(read_scp_arrays(str(scp)), str(base / f"{kind}_shards"), "frames",
                     shard_size=2500, frame_shift=0.01, source=str(scp))
    print(f"  {kind}: shards written in {time.perf_counter() - t:.1f} s", flush=True)
    rows = []
    table = kaldiio.load_scp(str(scp))
    rows.append(timed("kaldiio load_scp", keys, table.__getitem__, reads))
    dataset = ScpDataset({kind: str(scp)})
    rows.append(timed("speechdump ScpDataset", picks.tolist(), lambda i: dataset[i][kind], reads))
    reader = ShardReader(str(base / f"{kind}_shards.json"))
    shard_set = ShardDataset(reader, kind)
    rows.append(timed("shards ShardDataset (copy)", picks.tolist(),
                      lambda i: shard_set[i][kind], reads))
    rows.append(timed("shards ShardReader (view)", picks.tolist(), reader.__getitem__, reads))
    if lhotse_reads:
        from lhotse import CutSet

        from speechdump.lhotse_export import export

        t = time.perf_counter()
        paths = export(str(data), [str(scp.parent)], str(base / f"{kind}_lhotse"))
        cuts = CutSet.from_file(paths["cuts"]).to_eager()
        print(f"  {kind}: Lhotse manifests written and loaded in {time.perf_counter() - t:.1f} s",
              flush=True)
        by_id = {cut.id: cut for cut in cuts}
        n = min(reads, lhotse_reads)
        load = ((lambda u: by_id[u].load_custom("tokens")) if kind == "tokens"
                else (lambda u: by_id[u].load_features()))
        rows.append(timed("Lhotse cuts (" + ("load_custom" if kind == "tokens" else
                                             "load_features") + ")", keys[:n], load, n))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--token_utts", type=int, default=100000)
    p.add_argument("--feat_utts", type=int, default=10000)
    p.add_argument("--reads", type=int, default=20000)
    p.add_argument("--lhotse_reads", type=int, default=20000,
                   help="random reads through Lhotse (0: skip Lhotse)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        fbank = real_fbank()
        tokens = kmeans_tokens(fbank)
        frames = sum(len(f) for f in fbank.values())
        print(f"real data: {len(fbank)} recordings, {frames} fbank frames, tokens in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        token_scp, token_data = build(base, "tokens", tokens, args.token_utts,
                                      Stream(kind=INT, shape=TOKENS, frame_shift=0.01), 1)
        feat_scp, feat_data = build(base, "feats", fbank, args.feat_utts,
                                    Stream(kind=FLOAT, shape=FRAMES, frame_shift=0.01, dim=40), 2)
        print(f"arks written in {time.perf_counter() - t:.1f} s", flush=True)
        results = {}
        for kind, scp, data, count in (("tokens", token_scp, token_data, args.token_utts),
                                       ("feats", feat_scp, feat_data, args.feat_utts)):
            results[kind] = (count, bench(kind, scp, data, base, args.reads, 3,
                                          args.lhotse_reads))
    print()
    print("| data | reader | items/s | MB/s | × kaldiio items/s |")
    print("|---|---|---|---|---|")
    for kind, (count, rows) in results.items():
        reference = rows[0][1]
        label = (f"{count} token utts (int32 ark, int16 shards)" if kind == "tokens"
                 else f"{count} fbank utts (40-dim float32)")
        for name, items, mb in rows:
            print(f"| {label} | {name} | {items:,.0f} | {mb:,.1f} | {items / reference:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
