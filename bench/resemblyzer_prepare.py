#!/usr/bin/env python3
"""Where a Resemblyzer job's loader work goes: each step of decoding and preparing, timed alone
on one thread over a scale corpus (bench/make_scale_corpus.sh), in seconds per 10k utterances.

    tools/venv/bin/python bench/resemblyzer_prepare.py [--utts 2000]
"""

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from resemblyzer import audio, hparams  # noqa: E402
from speechdump.audio import ResamplerCache, downmix, read_samples  # noqa: E402
from speechdump.data import read_utterances  # noqa: E402
from speechdump.extractors import resemblyzer  # noqa: E402
from scale import make_corpus  # noqa: E402  (bench/, this script's folder)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--utts", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_corpus(args.utts, Path(tmp))
        utterances = read_utterances(str(data / "wav.scp"), str(data / "segments"))
    resamplers, extractor = ResamplerCache(), resemblyzer.ResemblyzerExtractor()
    spent = collections.Counter()  # the job's steps
    inside = collections.Counter()  # parts of prepare, timed again on their own
    audio_seconds = 0.0
    for utt in utterances:
        t0 = time.perf_counter()
        samples, rate = read_samples(utt)
        t1 = time.perf_counter()
        wave = resamplers.resample(torch.from_numpy(downmix(samples)), rate, 16000).numpy()
        t2 = time.perf_counter()
        try:
            extractor.prepare(wave)
        except ValueError:  # no speech left after trimming: a bad utterance in a job
            pass
        t3 = time.perf_counter()
        spent["decode (soundfile)"] += t1 - t0
        spent["downmix and resample"] += t2 - t1
        spent["prepare"] += t3 - t2
        audio_seconds += len(wave) / 16000
        normalised = audio.normalize_volume(wave, hparams.audio_norm_target_dBFS,
                                            increase_only=True)
        t4 = time.perf_counter()
        resemblyzer.trim_long_silences(normalised)
        t5 = time.perf_counter()
        inside["volume normalisation"] += t4 - t3
        inside["silence trimming (webrtcvad)"] += t5 - t4
    total = sum(spent.values())
    scale = 10000 / len(utterances)
    print(f"{len(utterances)} utterances, {audio_seconds:.0f} s of audio; seconds per 10k "
          f"utterances, one thread")
    print("| step | s per 10k | share |\n|---|---|---|")
    for name, seconds in spent.items():
        print(f"| {name} | {seconds * scale:.2f} | {100 * seconds / total:.0f} % |")
    rest = spent["prepare"] - sum(inside.values())
    for name, seconds in [*inside.items(), ("mel spectrogram and partials (the rest)", rest)]:
        print(f"| prepare: {name} | {seconds * scale:.2f} | {100 * seconds / total:.0f} % |")
    print(f"| all | {total * scale:.2f} | |")


if __name__ == "__main__":
    main()
