"""Speech regions (``--toolkit silero_vad``'s ``[regions, 2]`` sample ranges per utterance) into
Kaldi ``segments``, ``utt2speech_ratio`` and a data dir of the regions; and the trimming of
``--vad true`` on the speaker stage (:class:`SpeechTrimmer`, at the end of this module): each
utterance cut to those regions, concatenated, before the speaker extractor.

A region of utterance ``U`` is named ``U-<start ms>-<end ms>`` (milliseconds from the start of
``U``, seven digits, so an utterance's regions sort in time order under ``LC_ALL=C`` up to
2.7 hours). Its ``segments`` line is relative to ``U``'s recording: ``U`` itself where the data
dir has no ``segments``, else ``U``'s recording, offset by ``U``'s start.

The data dir of the regions keeps, for the utterances that have one or more: ``wav.scp`` (their
recordings), ``utt2spk`` and ``spk2utt`` (each region its utterance's speaker) and ``utt2dur``
(the regions' lengths). It has no ``text``, as Kaldi's ``utils/data/subsegment_data_dir.sh``
writes none without a text of the pieces: a region holds part of its utterance's words, and
which part is not known (even a single region may have lost a short word the VAD dropped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from speechdump.data import read_segments, read_table, write_table
from speechdump.errors import DataDirError, OptionError

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
    path = os.path.join(data_dir, "utt2spk")
    if not os.path.exists(path):
        return
    utt2spk = read_table(path)
    absent = next((region2utt[r] for r, *_ in lines if region2utt[r] not in utt2spk), None)
    if absent is not None:
        raise DataDirError(f"{path} has no line for '{absent}'")
    write_table(os.path.join(new_dir, "utt2spk"), ((r, utt2spk[region2utt[r]]) for r, *_ in lines))
    spk2utt: Dict[str, List[str]] = {}
    for r, *_ in lines:
        spk2utt.setdefault(utt2spk[region2utt[r]], []).append(r)
    write_table(os.path.join(new_dir, "spk2utt"),
                ((s, " ".join(spk2utt[s])) for s in sorted(spk2utt)))


# ----------------------------------------------------------------- trimming before an extractor
#
# ``--vad true`` on the speaker stage (``pyscripts/extract.py``): each utterance is cut down to
# its speech regions, concatenated, before the extractor sees it, as WeSpeaker's CLI does
# (``wespeaker/cli/speaker.py``: silero's ``get_speech_timestamps``, then the segments joined
# into one waveform). The regions are those of ``--toolkit silero_vad`` with the same options
# (silero's defaults unless given), computed at 16 kHz; where the extractor's rate is another,
# the waveform it receives is resampled to 16 kHz for the VAD only, and the regions are mapped
# back to its rate.

VAD_GROUP = "trimming to speech before the extractor (--vad true; Silero VAD, speechdump/vad.py)"


def trim_options():
    """The ``--vad_<name>`` options: silero_vad's own declarations, renamed."""
    import dataclasses

    from speechdump.extractors.silero_vad import SileroVadExtractor

    return [dataclasses.replace(option, name=f"vad_{option.name}")
            for option in SileroVadExtractor.options]


def add_trim_options(p) -> None:
    """``--vad`` and the ``--vad_<name>`` thresholds, as general options of ``p`` (strings,
    checked by :func:`trim_settings`)."""
    group = p.add_argument_group(VAD_GROUP)
    group.add_argument("--vad", default="false", metavar="BOOL",
                       help="true: keep only the speech regions of each utterance (Silero VAD), "
                            "concatenated, before the extractor; an utterance without speech is "
                            "a bad utterance; default: false")
    for option in trim_options():
        group.add_argument(f"--{option.name}", default=None, metavar=option.type.__name__.upper(),
                           help=option.describe())


def trim_settings(args) -> Optional[Dict[str, float]]:
    """The VAD settings of parsed ``args`` (every ``--vad_<name>`` checked, whether or not
    ``--vad`` is true; OptionError names a bad one): ``{threshold, min_speech, min_silence,
    pad}``, or None with ``--vad false``. Removes the options from ``args``."""
    from speechdump.extractors.base import Option

    enabled = Option("vad", bool, False, "").parse(args.vad)
    settings = {}
    for option in trim_options():
        given = getattr(args, option.name)
        settings[option.name[len("vad_"):]] = (option.default if given is None
                                               else option.parse(given))
        delattr(args, option.name)
    del args.vad
    return settings if enabled else None


def check_trim(settings: Optional[dict], streams, toolkit: str) -> None:
    """``--vad true`` applies where every output is one vector per utterance: frame-level
    streams keep the utterance's time axis, which trimming would cut (scripts/compute_vad.sh
    writes a data dir of the speech regions instead, which every stage takes)."""
    if settings is None:
        return
    from speechdump.extractors.silero_vad import model_path

    model_path()  # ModelError where silero-vad is not installed
    frame_level = [s for s in streams if s.shape != "vector"]
    if frame_level:
        raise OptionError(f"--vad true: --toolkit {toolkit} writes frame-level output, whose "
                          "frames would no longer line up with the utterance's time; trimming "
                          "applies to utterance vectors (the speaker stage). For frames, run "
                          "scripts/compute_vad.sh and extract from its data dir of the regions")


def trim_record(settings: dict) -> dict:
    """What of the VAD determines the trimmed audio, for the job's config: its options and
    its model (the silero-vad version and the TorchScript file's SHA-256)."""
    import importlib.metadata

    from speechdump.extractors.silero_vad import model_path
    from speechdump.provenance import sha256_file

    return {**settings, "model": {"silero-vad": importlib.metadata.version("silero-vad"),
                                  "sha256": sha256_file(model_path())}}


def describe_settings(settings: dict) -> str:
    return ", ".join(f"--vad_{name} {value}" for name, value in settings.items()
                     if name != "model")


def map_regions(regions: np.ndarray, rate: int, length: int) -> np.ndarray:
    """``[start, end)`` sample ranges at 16 kHz -> the same times at ``rate``, within
    ``length`` samples (rounded to the nearest sample)."""
    regions = np.asarray(regions, dtype=np.int64).reshape(-1, 2)
    if rate == SAMPLE_RATE:
        return np.clip(regions, 0, length)
    mapped = np.rint(regions * (rate / SAMPLE_RATE)).astype(np.int64)
    return np.clip(mapped, 0, length)


@dataclass
class Trimmed:
    """A waveform cut down to its speech: ``wave`` (the regions concatenated) and ``regions``
    (``[start, end)`` at its rate in the untrimmed waveform)."""
    wave: np.ndarray
    regions: np.ndarray


class SpeechTrimmer:
    """Cuts a waveform down to its speech regions (Silero VAD, the ``silero_vad`` toolkit's
    model and options). Safe to call from many loader threads at once: silero_vad's forward
    keeps its state in local variables, the resampler cache is locked.

    ``trimmer(wave, rate)`` -> the regions concatenated; ValueError (the reason) where there is
    no speech. ``regions(wave, rate)`` gives the ranges alone."""

    def __init__(self, settings: dict):
        from speechdump.audio import ResamplerCache
        from speechdump.extractors import load_extractor

        self.settings = {k: v for k, v in settings.items() if k != "model"}
        self.vad = load_extractor("silero_vad", **self.settings)  # on the CPU: a small model
        self.resamplers = ResamplerCache()

    def regions(self, wave: np.ndarray, rate: int) -> np.ndarray:
        wave16 = wave
        if rate != SAMPLE_RATE:
            import torch

            wave16 = self.resamplers.resample(torch.from_numpy(np.ascontiguousarray(
                wave, dtype=np.float32)), rate, SAMPLE_RATE).numpy()
        return map_regions(self.vad.forward([wave16])[0], rate, len(wave))

    def trim(self, wave: np.ndarray, rate: int) -> Trimmed:
        regions = self.regions(wave, rate)
        regions = regions[regions[:, 1] > regions[:, 0]]
        if not len(regions):
            raise ValueError(f"no speech: Silero VAD found none in its {len(wave) / rate:.2f} s "
                             f"({describe_settings(self.settings)}); --vad true leaves nothing "
                             "to embed")
        return Trimmed(np.concatenate([wave[s:e] for s, e in regions.tolist()]), regions)

    def __call__(self, wave: np.ndarray, rate: int) -> np.ndarray:
        return self.trim(wave, rate).wave
