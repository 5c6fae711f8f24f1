"""Kaldi data directory files: key-value tables, segments, and the utterance list they define."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from speechdump.errors import DataDirError


def read_table(path: str) -> Dict[str, str]:
    """Reads a Kaldi table (``key rest-of-line``) in file order; duplicate keys are an error."""
    table: Dict[str, str] = {}
    lines = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split(maxsplit=1)
            if fields:
                table[fields[0]] = fields[1].rstrip() if len(fields) > 1 else ""
                lines += 1
    if len(table) != lines:  # rare: find the first repeated key for the message
        seen = set()
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split(maxsplit=1)
                if fields and fields[0] in seen:
                    raise DataDirError(f"{path}:{lineno}: duplicate key '{fields[0]}'")
                seen.update(fields[:1])
    return table


def read_keys(path: str) -> List[str]:
    """The first field of every line, in file order."""
    return list(read_table(path))


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary name to write ``path`` under, renamed to ``path`` when the block ends
    without error and removed otherwise: readers never see a partial file, and a failed write
    (a full disk) leaves nothing behind."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_table(path: str, items: Iterable[Tuple[str, str]]) -> None:
    """Writes ``key value`` lines atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key, value in items:
            f.write(f"{key} {value}\n")


@dataclass(frozen=True)
class Utterance:
    """One utterance to extract: a whole ``wav.scp`` entry, or a segment of one."""

    utt_id: str
    source: str  # the wav.scp value: a path, a pipe command ending in '|', or 'foo.ark:123'
    start: float = 0.0
    end: Optional[float] = None  # None: to the end of the recording

    @property
    def is_segment(self) -> bool:
        return self.start > 0.0 or self.end is not None


def read_segments(path: str) -> Dict[str, Tuple[str, float, float]]:
    """``segments``: utt -> (recording, start, end); Kaldi's end of -1 means the end of the file."""
    segments = {}
    for utt, rest in read_table(path).items():
        fields = rest.split()
        if len(fields) != 3:
            raise DataDirError(f"{path}: line of '{utt}' must be '<utt> <reco> <start> <end>'")
        reco, start, end = fields[0], float(fields[1]), float(fields[2])
        if start < 0 or (end != -1 and end <= start):
            raise DataDirError(f"{path}: '{utt}' has an empty or negative range {start}..{end}")
        segments[utt] = (reco, start, end)
    return segments


def read_utterances(wav_scp: str, segments: Optional[str] = None) -> List[Utterance]:
    """The utterances a data dir defines, in the order of ``segments`` (if given) or ``wav.scp``."""
    recordings = read_table(wav_scp)
    if segments is None:
        return [Utterance(utt, source) for utt, source in recordings.items()]
    utterances = []
    for utt, (reco, start, end) in read_segments(segments).items():
        if reco not in recordings:
            raise DataDirError(f"{segments}: recording '{reco}' of '{utt}' is not in {wav_scp}")
        utterances.append(Utterance(utt, recordings[reco], start, None if end == -1 else end))
    return utterances
