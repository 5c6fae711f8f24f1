"""The real speech of samples/real_speech repeated to a corpus of a given length, for benches."""

import math
from pathlib import Path

from speechdump.data import Utterance, read_table

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "real_speech"


def corpus(minutes: float):
    """The sample recordings repeated until they hold about ``minutes`` of audio."""
    recordings = [(utt, str(SAMPLES / path))
                  for utt, path in read_table(SAMPLES / "wav.scp").items()]
    total = sum(float(d) for d in read_table(SAMPLES / "utt2dur").values())
    copies = max(1, math.ceil(minutes * 60 / total))
    return [Utterance(f"{utt}-copy{c}", path) for c in range(copies) for utt, path in recordings]
