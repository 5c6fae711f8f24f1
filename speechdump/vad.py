"""Speech regions (``--toolkit silero_vad``'s ``[regions, 2]`` sample ranges per utterance) into
Kaldi ``segments``, ``utt2speech_ratio`` and a data dir of the regions.

A region of utterance ``U`` is named ``U-<start ms>-<end ms>`` (milliseconds from the start of
``U``, seven digits, so an utterance's regions sort in time order under ``LC_ALL=C`` up to
2.7 hours). Its ``segments`` line is relative to ``U``'s recording: ``U`` itself where the data
dir has no ``segments``, else ``U``'s recording, offset by ``U``'s start.

The data dir of the regions keeps, for the utterances that have one or more, what Kaldi's
``utils/subset_data_dir.sh`` keeps: ``wav.scp`` (their recordings), ``utt2spk`` and ``spk2utt``
(each region its utterance's speaker), ``text`` (each region its utterance's text: the whole
utterance's words, which a region of it may not all hold: :func:`write_outputs` returns the
utterances split into several regions, for the caller to say so) and ``utt2dur`` (the
regions' lengths).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from speechdump.data import read_segments, read_table, write_table
from speechdump.errors import DataDirError

SAMPLE_RATE = 16000


def seconds(samples: float) -> str:
    """Seconds as a short exact decimal (a sample at 16 kHz needs at most 7 places)."""
    text = f"{samples / SAMPLE_RATE:.7f}".rstrip("0").rstrip(".")
    return text or "0"


def region_id(utt: str, start: int, end: int) -> str:
    """``<utt>-<start ms 7 digits>-<end ms 7 digits>``."""
    return f"{utt}-{int(round(start * 1000 / SAMPLE_RATE)):07d}-" \
           f"{int(round(end * 1000 / SAMPLE_RATE)):07d}"


@dataclass
class VadSummary:
    utterances: int = 0
    regions: int = 0
    speech_seconds: float = 0.0
    audio_seconds: float = 0.0
    no_speech: List[str] = field(default_factory=list)  # utterances without a region
    split: List[str] = field(default_factory=list)  # utterances with several regions


def write_outputs(regions: Dict[str, np.ndarray], utt2dur: Dict[str, float], data_dir: str,
                  out_dir: str) -> VadSummary:
    """Writes ``<out_dir>/segments``, ``<out_dir>/utt2speech_ratio`` (speech seconds over
    duration, each utterance of ``regions``, in their order) and ``<out_dir>/data``."""
    if os.path.realpath(os.path.join(out_dir, "data")) == os.path.realpath(data_dir):
        raise DataDirError(f"{out_dir}/data is the input data dir {data_dir}: the regions' data "
                           "dir would overwrite it; give another out dir")
    segments_path = os.path.join(data_dir, "segments")
    source = read_segments(segments_path) if os.path.exists(segments_path) else {}
    summary = VadSummary()
    lines: List[Tuple[str, str, str, str]] = []  # region, recording, start, end
    region2utt: Dict[str, str] = {}
    durations: Dict[str, str] = {}
    ratios = []
    for utt, ranges in regions.items():
        ranges = np.asarray(ranges).reshape(-1, 2)
        if utt not in utt2dur:
            raise DataDirError(f"utt2dur has no duration for '{utt}'")
        duration = utt2dur[utt]
        speech = float((ranges[:, 1] - ranges[:, 0]).sum()) / SAMPLE_RATE
        ratios.append((utt, f"{speech / duration if duration > 0 else 0.0:.4f}"))
        summary.utterances += 1
        summary.audio_seconds += duration
        summary.speech_seconds += speech
        if not len(ranges):
            summary.no_speech.append(utt)
            continue
        if len(ranges) > 1:
            summary.split.append(utt)
        recording, offset = (source[utt][0], source[utt][1]) if utt in source else (utt, 0.0)
        for start, end in ranges.tolist():
            region = region_id(utt, start, end)
            if region in region2utt:
                raise DataDirError(f"two regions of '{utt}' would both be named {region}")
            region2utt[region] = utt
            base = offset * SAMPLE_RATE
            lines.append((region, recording, seconds(base + start), seconds(base + end)))
            durations[region] = seconds(end - start)
    summary.regions = len(lines)
    lines.sort()
    write_table(os.path.join(out_dir, "segments"), ((r, f"{c} {s} {e}") for r, c, s, e in lines))
    write_table(os.path.join(out_dir, "utt2speech_ratio"), ratios)
    _write_data_dir(data_dir, os.path.join(out_dir, "data"), lines, region2utt, durations)
    return summary


def _write_data_dir(data_dir: str, new_dir: str, lines, region2utt: Dict[str, str],
                    durations: Dict[str, str]) -> None:
    os.makedirs(new_dir, exist_ok=True)
    for name in ("utt2spk", "spk2utt", "text", "feats.scp", "utt2num_frames", "cmvn.scp"):
        stale = os.path.join(new_dir, name)
        if os.path.exists(stale):  # from an earlier run over a data dir that had them
            os.remove(stale)
    wav = read_table(os.path.join(data_dir, "wav.scp"))
    recordings = sorted({line[1] for line in lines})
    missing = [r for r in recordings if r not in wav]
    if missing:
        raise DataDirError(f"{data_dir}/wav.scp has no recording '{missing[0]}'")
    write_table(os.path.join(new_dir, "wav.scp"), ((r, wav[r]) for r in recordings))
    write_table(os.path.join(new_dir, "segments"), ((r, f"{c} {s} {e}") for r, c, s, e in lines))
    write_table(os.path.join(new_dir, "utt2dur"), ((r, durations[r]) for r, *_ in lines))
    for name in ("utt2spk", "text"):
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            continue
        table = read_table(path)
        absent = next((region2utt[r] for r, *_ in lines if region2utt[r] not in table), None)
        if absent is not None:
            raise DataDirError(f"{path} has no line for '{absent}'")
        write_table(os.path.join(new_dir, name),
                    ((r, table[region2utt[r]]) for r, *_ in lines))
        if name == "utt2spk":
            spk2utt: Dict[str, List[str]] = {}
            for r, *_ in lines:
                spk2utt.setdefault(table[region2utt[r]], []).append(r)
            write_table(os.path.join(new_dir, "spk2utt"),
                        ((s, " ".join(spk2utt[s])) for s in sorted(spk2utt)))
