"""Resampling to 16 kHz: speechdump's resampler against torchaudio's, on real speech.

Each source rate resamples the same 200 segments of 1-12 s (every one a new length, as in a
corpus), one thread, after one warm-up pass of another length:

    tools/venv/bin/python bench/resample.py
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from speechdump.audio import ResamplerCache  # noqa: E402

SPEECH = REPO / "samples" / "real_speech" / "audio" / "jfk-inaugural1961.flac"  # 44.1 kHz, 11 s


def timed(resample, waves) -> float:
    resample(torch.zeros(12345))
    start = time.perf_counter()
    for wave in waves:
        resample(wave)
    return time.perf_counter() - start


def main() -> None:
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    samples, rate = soundfile.read(SPEECH, dtype="float32")
    speech = torch.from_numpy(samples.mean(axis=1))
    lengths = np.random.default_rng(0).uniform(1.0, 12.0, 200)
    print("| source rate | torchaudio | speechdump | speed-up | max abs difference |\n"
          "|---|---|---|---|---|")
    for source in (48000, 44100, 32000, 24000, 22050, 8000):
        long = torchaudio.functional.resample(torch.cat([speech, speech]), rate, source)
        waves = [long[:int(seconds * source)] for seconds in lengths]
        ours = ResamplerCache().get(source, 16000)
        theirs = torchaudio.transforms.Resample(source, 16000, dtype=torch.float32,
                                                **ResamplerCache.FILTER)
        with torch.no_grad():
            t_theirs, t_ours = timed(theirs, waves), timed(ours, waves)
            diff = max(float((ours(w) - theirs(w)).abs().max()) for w in waves[:20])
        print(f"| {source} Hz | {t_theirs:.2f} s | {t_ours:.2f} s | {t_theirs / t_ours:.1f}× "
              f"| {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
