#!/usr/bin/env python3
"""SSL hidden-state extraction: the engine's batches against one utterance at a time.

Two base-size random-init encoders (768 hidden, 12 layers, 512-channel convolutions; built by
test/build_ssl_model.py, nothing downloads):

* HuBERT with group norm (the layout of hubert-base / wav2vec2-base / wavlm-base);
* wav2vec 2.0 with layer norm and a pre-norm ("stable layer norm") transformer, i.e. the layout
  of the large models (wav2vec2-large-lv60, hubert-large) at base size.

Both batch padded utterances in speechdump (the group-norm one through its per-item first
convolution; see speechdump/extractors/ssl.py). For each model, three loops over the same
corpus (the real speech samples, ``--copies`` times), all hidden states (``--layers all``) as
float32 arrays. Each loop runs twice in this process: first untimed, keeping the outputs that
are compared; then timed, dropping them as a job writes them out:

* sequential: for each utterance, decode + resample (speechdump.audio.load_audio), the feature
  extractor, ``model(**inputs, output_hidden_states=True)``: a plain extraction script;
* engine, default: loader threads ahead of the model; on CPU the extractor sends one
  utterance per forward pass (its ``max_batch_size = 1``), so this is prefetching alone; on a
  GPU it batches already, and the next column is the same run;
* engine, batched: ``max_batch_size`` lifted, length-sorted padded batches of at most
  ``--batch_seconds`` padded seconds.

Then long audio: the 11 s JFK clip tiled to about ``--long_seconds``, in windows of
``--window_seconds`` every ``--hop_seconds``, windows batched (the extractor's ``forward``)
against one forward pass per window (each window preprocessed and run alone, mean-pooled).

    tools/venv/bin/python bench/ssl_feats.py
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests
sys.path.insert(0, str(REPO))

from build_ssl_model import build  # noqa: E402
from speechdump import engine  # noqa: E402
from speechdump.audio import ResamplerCache, load_audio  # noqa: E402
from speechdump.data import Utterance, read_table  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"
MODELS = (("hubert", "group", "HuBERT base, group norm"),
          ("wav2vec2", "layer", "wav2vec2 base size, layer norm (large layout)"))


def corpus(copies: int):
    recordings = [(utt, str(SAMPLES / path))
                  for utt, path in read_table(SAMPLES / "wav.scp").items()]
    return [Utterance(f"{utt}-copy{c}", path) for c in range(copies) for utt, path in recordings]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def sequential(model, fe, utterances, keep=True):
    """One utterance at a time, as a plain script does it; ``keep``: return the outputs."""
    resamplers = ResamplerCache()
    out = {}
    for utt in utterances:
        wave = load_audio(utt, fe.sampling_rate, resamplers)
        inputs = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        states = {f"layer{n}": h[0].cpu().numpy().copy() for n, h in enumerate(hidden)}
        if keep:
            out[utt.utt_id] = states
    return out


def run_engine(extractor, utterances, batch_seconds, num_workers, cap, keep=True):
    """The engine with the extractor's ``max_batch_size`` set to ``cap``; ``keep``: return the
    outputs too."""
    extractor.max_batch_size = cap
    out = {}
    options = engine.EngineOptions(batch_seconds=batch_seconds, batch_size=64,
                                   num_workers=num_workers, progress=False)
    stats = engine.run(utterances, extractor, out.__setitem__ if keep else lambda *_: None,
                       options)
    return out, stats


def max_diff(a, b, relative=False):
    """Max abs difference over utterances and layers (relative: over max |reference|)."""
    return max(float(np.abs(a[u][k] - b[u][k]).max())
               / (float(np.abs(b[u][k]).max()) if relative else 1.0) for u in b for k in b[u])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=1, help="times the 26 samples are repeated")
    p.add_argument("--batch_seconds", type=float, default=60.0)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads, the same for every loop")
    p.add_argument("--long_seconds", type=float, default=60.0)
    p.add_argument("--window_seconds", type=float, default=10.0)
    p.add_argument("--hop_seconds", type=float, default=5.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    utterances = corpus(args.copies)
    jfk = load_audio(Utterance("jfk", str(SAMPLES / "audio" / "jfk-inaugural1961.flac")),
                     16000, ResamplerCache())
    long_wave = np.tile(jfk, max(1, math.ceil(args.long_seconds * 16000 / len(jfk))))
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} torch threads, "
          f"{os.cpu_count()} cores; corpus: {len(utterances)} utterances (real speech samples "
          f"x{args.copies}); engine num_workers {args.num_workers}; all 13 hidden states kept")
    rows, window_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, norm, label in MODELS:
            path = str(build(Path(tmp) / f"{kind}-{norm}", kind, norm, small=False))
            model = AutoModel.from_pretrained(path).to(args.device).eval()
            fe = AutoFeatureExtractor.from_pretrained(path)
            extractor = load_extractor("ssl", path, args.device, layers="all")
            default_cap = extractor.max_batch_size
            # The default already batches on a GPU: there one run fills both columns.
            caps = (default_cap,) if default_cap is None else (default_cap, None)

            def passes(keep):
                """Sequential, then the engine with each cap: [(outputs, stats, wall)]."""
                runs = [timed(lambda: (sequential(model, fe, utterances, keep), None))]
                runs += [timed(lambda: run_engine(extractor, utterances, args.batch_seconds,
                                                  args.num_workers, cap, keep))
                         for cap in caps]
                return [(out, stats, wall) for (out, stats), wall in runs]

            # An untimed pass gives the outputs to compare, and takes every one-time cost
            # (kernel choice per input shape, allocator growth) out of the timed pass, which
            # drops its outputs as a job writes them out: all 13 layers of the corpus (GBs)
            # kept in memory would time page faults, not extraction.
            (reference, _, _), *engine_runs = passes(keep=True)
            alone, batched = engine_runs[0][0], engine_runs[-1][0]
            diffs = (max_diff(alone, reference), max_diff(batched, reference),
                     max_diff(batched, reference, relative=True))
            audio = engine_runs[0][1].audio_seconds
            del reference, alone, batched, engine_runs
            walls = [wall for _, _, wall in passes(keep=False)]
            rows.append((label, default_cap, audio, walls[0], walls[1], walls[-1], *diffs))

            # Long audio in windows: batched against one forward per window.
            windowed = load_extractor("ssl", path, args.device, layers="all", pool="mean",
                                      window_seconds=args.window_seconds,
                                      hop_seconds=args.hop_seconds)
            item = windowed.prepare(long_wave)
            windowed.forward([item])  # warm-up

            def per_window():
                out = []
                for start in item.starts:
                    piece = long_wave[start:start + item.size]
                    inputs = fe(piece, sampling_rate=16000, return_tensors="pt").to(model.device)
                    with torch.inference_mode():
                        hidden = model(**inputs, output_hidden_states=True).hidden_states
                    out.append([h[0].mean(0).cpu().numpy() for h in hidden])
                return {f"layer{n}": np.stack([w[n] for w in out]) for n in range(len(out[0]))}

            batched_windows, win_wall = timed(lambda: windowed.forward([item])[0])
            single_windows, loop_wall = timed(per_window)
            diff = max(float(np.abs(batched_windows[k] - single_windows[k]).max())
                       for k in single_windows)
            window_rows.append((label, len(item.starts), loop_wall, win_wall, diff))
            model = extractor = windowed = None  # frees them before the next model loads

    print()
    print(f"Utterances ({rows[0][2]:.0f} s of audio): audio seconds per wall second; x = "
          f"sequential wall / engine wall; diff: engine vs sequential, max over all layers")
    header = (f"{'model':<48} {'sequential':>10} {'engine default':>14} {'engine batched':>14} "
              f"{'x default':>9} {'x batched':>9} {'diff default':>12} {'diff batched (rel)':>19}")
    print(header)
    print("-" * len(header))
    for label, cap, audio, seq, alone, batch, diff_alone, diff, rel in rows:
        print(f"{label:<48} {audio / seq:>10.1f} {audio / alone:>14.1f} {audio / batch:>14.1f} "
              f"{seq / alone:>8.2f}x {seq / batch:>8.2f}x {diff_alone:>12.1e} "
              f"{diff:>10.1e} ({rel:.0e})")
    same = "; the default batches already, so both columns are one run" if rows[0][1] is None \
        else ""
    print(f"(engine default: max_batch_size {rows[0][1]}; batched: max_batch_size None, "
          f"batch_seconds {args.batch_seconds:g}{same})")
    print()
    print(f"Long audio: JFK clip tiled to {len(long_wave) / 16000:.0f} s, windows of "
          f"{args.window_seconds:g} s every {args.hop_seconds:g} s (mean-pooled, all layers)")
    header = (f"{'model':<48} {'windows':>7} {'per window':>10} {'batched':>8} {'speed-up':>8} "
              f"{'max |diff|':>10}")
    print(header)
    print("-" * len(header))
    for label, count, loop, win, diff in window_rows:
        print(f"{label:<48} {count:>7} {loop:>9.1f}s {win:>7.1f}s {loop / win:>7.2f}x "
              f"{diff:>10.1e}")


if __name__ == "__main__":
    main()
