#!/usr/bin/env python3
"""Codec tokens per second: speechdump's engine against a per-utterance ``model.encode`` loop.

The random-init codecs of test/build_codec_models.py (EnCodec 24 kHz at 6 kbps, DAC 16 kHz
with its 12 codebooks, Mimi with its 8, X-Codec at 4 kbps = 8 codebooks; the real strides, so
the real frame rates; nothing downloads), all or those of ``--kinds``, over two corpora made of
the real speech samples:

* ``utterances``: the 26 recordings (1.5-11 s, all of different lengths), ``--copies`` times;
* ``segments``: the same recordings cut into ``--segment_seconds`` pieces (fixed-length
  segments, as speech-LM corpora are cut): equal lengths, which DAC and Mimi batch.

For each codec and corpus, two loops over the same utterances, each run twice (first to compare
the tokens, every one of which must be identical, then timed):

* loop: for each utterance, decode + resample (speechdump.audio.load_audio), the feature
  extractor, ``model.encode``: what a plain extraction script does;
* engine: ``engine.run`` with the codec extractor (loader threads ahead of the model; batches
  of equal lengths for DAC, Mimi and X-Codec, one utterance per forward for EnCodec).

Tokens per second counts frames x codebooks.

    tools/venv/bin/python bench/codec.py [--kinds xcodec]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests
sys.path.insert(0, str(REPO))

from build_codec_models import KINDS, build  # noqa: E402
from speechdump import engine  # noqa: E402
from speechdump.audio import ResamplerCache, load_audio  # noqa: E402
from speechdump.data import Utterance, read_table  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"
OPTIONS = {"encodec": {"bandwidth": 6.0}, "dac": {}, "mimi": {}, "xcodec": {}}


def utterances(copies: int):
    table = read_table(SAMPLES / "wav.scp")
    return [Utterance(f"{utt}-{c}", str(SAMPLES / path)) for c in range(copies)
            for utt, path in table.items()]


def segments(seconds: float, copies: int):
    durations = {k: float(v) for k, v in read_table(SAMPLES / "utt2dur").items()}
    items = []
    for c in range(copies):
        for reco, path in read_table(SAMPLES / "wav.scp").items():
            start = 0.0
            while start + seconds <= durations[reco]:
                items.append(Utterance(f"{reco}-{c}-{int(start * 100):05d}", str(SAMPLES / path),
                                       start=start, end=start + seconds))
                start += seconds
    return items


def loop(kind: str, model, fe, items) -> dict:
    """The per-utterance reference: feature extractor + ``model.encode``, one at a time."""
    resamplers, out = ResamplerCache(), {}
    with torch.inference_mode():
        for u in items:
            wave = load_audio(u, fe.sampling_rate, resamplers)
            inputs = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt")
            if kind == "encodec":
                codes = model.encode(inputs["input_values"], inputs["padding_mask"],
                                     bandwidth=6.0).audio_codes[0]
            else:
                codes = model.encode(inputs["input_values"]).audio_codes
            out[u.utt_id] = codes[0].T.numpy()
    return out


def run_engine(extractor, items, batch_seconds: float) -> dict:
    out = {}
    engine.run(items, extractor, out.__setitem__,
               engine.EngineOptions(batch_seconds=batch_seconds, num_workers=2, progress=False))
    return out


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--segment_seconds", type=float, default=2.0)
    p.add_argument("--batch_seconds", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoFeatureExtractor, AutoModel

    corpora = {"utterances": utterances(args.copies),
               "segments": segments(args.segment_seconds, args.copies)}
    print("| codec | corpus | utts | tokens | loop tok/s | engine tok/s | engine / loop | "
          "identical |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            path = build(Path(tmp) / kind, kind)
            model = AutoModel.from_pretrained(path).eval()
            fe = AutoFeatureExtractor.from_pretrained(path)
            extractor = load_extractor("codec", str(path), **OPTIONS[kind])
            for name, items in corpora.items():
                reference = loop(kind, model, fe, items)
                batched = run_engine(extractor, items, args.batch_seconds)
                same = all(np.array_equal(batched[k], reference[k]) for k in reference)
                _, loop_s = timed(loop, kind, model, fe, items)
                _, engine_s = timed(run_engine, extractor, items, args.batch_seconds)
                tokens = sum(v.size for v in reference.values())
                print(f"| {kind} | {name} | {len(items)} | {tokens} | {tokens / loop_s:,.0f} | "
                      f"{tokens / engine_s:,.0f} | {loop_s / engine_s:.2f} | "
                      f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
