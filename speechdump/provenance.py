"""What determines a job's output, recorded so that a rerun redoes exactly what changed and says
why.

A job's ``config`` (the same for every job of a stage) holds its options, the model's
fingerprint (each model file's size and SHA-256: computed once per stage, before the jobs
launch, and trusted by a job only while the file's size and modification time still match) and
the versions of speechdump, torch and the toolkit's packages. Its ``input`` is a digest of one
line per utterance: its ``wav.scp`` entry, its segment and the identity (size, modification
time) of the file it reads (for a pipe, of every file its command names), kept in full in
``sources.<job>`` so that a rerun can say which utterance changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shlex
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from speechdump import containers
from speechdump.data import Utterance, atomic_path, read_table
from speechdump.errors import ModelError
from speechdump.kaldi_io import ark_offset

HASH_BLOCK = 1 << 22


# ----------------------------------------------------------------------------- the model

def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(files: Sequence[str], known: Optional[dict] = None) -> Dict[str, dict]:
    """``{path: {"size", "mtime_ns", "sha256"}}`` of the model's files (symlinks followed: a
    link moved to a newer checkpoint is a new model). A file whose size and modification time
    are those in ``known`` (the stage's fingerprint) keeps its hash; others are hashed."""
    known = known or {}
    fingerprint = {}
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror}") from exc
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        old = known.get(path, {})
        if {k: old.get(k) for k in entry} == entry and old.get("sha256"):
            entry["sha256"] = old["sha256"]
        else:
            entry["sha256"] = sha256_file(path)
        fingerprint[path] = entry
    return fingerprint


def model_identity(fingerprint: Dict[str, dict]) -> Dict[str, dict]:
    """What of a fingerprint determines the output: size and content, not modification times."""
    return {path: {"size": e["size"], "sha256": e["sha256"]} for path, e in fingerprint.items()}


def read_fingerprint(path: Optional[str]) -> Dict[str, dict]:
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_fingerprint(path: str, fingerprint: Dict[str, dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f, indent=1)


def versions(packages: Iterable[str]) -> Dict[str, str]:
    """Versions of speechdump, torch and ``packages``, as installed."""
    found = {}
    for package in ("speechdump", "torch", *packages):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


# ----------------------------------------------------------------------------- the input

def _file_of(source: str) -> Optional[str]:
    """The file a wav.scp entry reads (an ark's for ``foo.ark:123``, a shard's or parquet
    file's for an entry into one); None for a pipe."""
    source = source.strip()
    if source.endswith("|"):
        return None
    try:
        container = containers.parse(source)
    except ValueError:  # malformed: the job says so when it reads it
        container = None
    if container is not None:
        return container.path
    if os.path.exists(source):
        return source
    ark = ark_offset(source)
    return ark[0] if ark else source


def pipe_files(command: str) -> List[str]:
    """The files a pipe command names: its words (a redirection's ``<`` dropped) that are
    existing files, in order, without the programs it runs."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: the shell will say so when the job runs it
        words = command.split()
    files = []
    for position, word in enumerate(words):
        word = word.lstrip("<")
        program = position == 0 or words[position - 1] in ("|", "&&", ";")
        if word and not program and os.path.isfile(word) and word not in files:
            files.append(word)
    return files


def _identity(source: str) -> str:
    """``<size> <mtime_ns>`` of the file an entry reads; for a pipe, ``pipe:<digest> -`` of the
    sizes and times of every file its command names (``pipe:none -`` where it names none:
    nothing tells a changed input then); ``missing -`` for a file that is not there."""
    source = source.strip()
    if source.endswith("|"):
        files = pipe_files(source[:-1])
        if not files:
            return "pipe:none -"
        sha = hashlib.sha1()
        for path in files:
            stat = os.stat(path)
            sha.update(f"{path} {stat.st_size} {stat.st_mtime_ns}\n".encode("utf-8"))
        return f"pipe:{sha.hexdigest()[:16]} -"
    try:
        stat = os.stat(_file_of(source))
    except OSError:
        return "missing -"
    return f"{stat.st_size} {stat.st_mtime_ns}"


def input_lines(utterances: Sequence[Utterance]) -> List[Tuple[str, str]]:
    """(utt id, ``<size> <mtime_ns> <start> <end> <entry>``) per utterance: what it reads."""
    lines = []
    for utt in utterances:
        end = "-" if utt.end is None else f"{utt.end:g}"
        lines.append((utt.utt_id,
                      f"{_identity(utt.source)} {utt.start:g} {end} {utt.source.strip()}"))
    return lines


def unfingerprinted(lines: Sequence[Tuple[str, str]]) -> List[str]:
    """The utterances of ``lines`` whose input cannot be fingerprinted (pipes naming no file)."""
    return [utt for utt, line in lines if line.startswith("pipe:none ")]


def digest(lines: Sequence[Tuple[str, str]]) -> str:
    sha = hashlib.sha1()
    for key, value in lines:
        sha.update(f"{key} {value}\n".encode("utf-8"))
    return sha.hexdigest()


def sources_path(split_dir: str, job: int) -> str:
    """The job's table of what each utterance reads (beside ``input.<job>``, its utterances)."""
    return os.path.join(split_dir, f"sources.{job}")


def _what_changed(old: str, new: str) -> str:
    size0, mtime0, start0, end0, entry0 = (old.split(" ", 4) + [""] * 5)[:5]
    size1, mtime1, start1, end1, entry1 = (new.split(" ", 4) + [""] * 5)[:5]
    if entry0 != entry1:
        return f"its wav.scp entry changed ({entry0} -> {entry1})"
    if (start0, end0) != (start1, end1):
        return f"its segment changed ({start0}..{end0} s -> {start1}..{end1} s)"
    if size0.startswith("pipe:") or size1.startswith("pipe:"):
        return "a file its pipe command reads changed (size or modification time)"
    what = "the shard it reads" if entry1.startswith(containers.PREFIXES) else "its audio file"
    if size0 != size1:
        return f"{what} changed (size {size0} -> {size1} bytes)"
    return f"{what} was modified (modification time)"


def input_changes(split_dir: str, job: int, lines: Sequence[Tuple[str, str]],
                  limit: int = 3) -> str:
    """Which utterances of ``lines`` read something else than in the job's last run."""
    path = sources_path(split_dir, job)
    if not os.path.exists(path):
        return "its input changed"
    old = read_table(path)
    new = dict(lines)
    changes = [f"'{utt}' is new" for utt in new if utt not in old]
    changes += [f"'{utt}' is gone" for utt in old if utt not in new]
    changes += [f"'{utt}': {_what_changed(old[utt], value)}" for utt, value in new.items()
                if utt in old and old[utt] != value]
    if not changes:
        return "its input changed"
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


# ----------------------------------------------------------------------------- the config

def _describe(key: str, old, new) -> str:
    if key == "options" and isinstance(old, dict) and isinstance(new, dict):
        return ", ".join(f"--{name} {old.get(name)} -> {new.get(name)}"
                         for name in sorted(old.keys() | new.keys())
                         if old.get(name) != new.get(name))
    if key == "model" and isinstance(old, dict) and isinstance(new, dict):
        changed = sorted(path for path in old.keys() | new.keys()
                         if old.get(path) != new.get(path))
        return "the model changed: " + ", ".join(
            f"{path} (sha256 {str((old.get(path) or {}).get('sha256'))[:12]} -> "
            f"{str((new.get(path) or {}).get('sha256'))[:12]})" for path in changed)
    if key == "versions" and isinstance(old, dict) and isinstance(new, dict):
        return "library versions changed: " + ", ".join(
            f"{name} {old.get(name)} -> {new.get(name)}"
            for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name))
    if key == "revision":  # absent at revision 1 (Extractor.revision)
        return (f"the toolkit's output changed in this speechdump (revision {old or 1} -> "
                f"{new or 1})")
    if key == "vad":  # present with --vad true only (speechdump.vad.trim_record)
        return _describe_vad(old, new)
    return f"--{key} {old} -> {new}"


def _describe_vad(old: Optional[dict], new: Optional[dict]) -> str:
    def settings(record: dict) -> str:
        return ", ".join(f"--vad_{name} {value}" for name, value in record.items()
                         if name != "model")

    if not old:
        return f"--vad false -> true ({settings(new or {})})"
    if not new:
        return f"--vad true -> false (it trimmed with {settings(old)})"
    changed = [f"--vad_{name} {old.get(name)} -> {new.get(name)}"
               for name in sorted(old.keys() | new.keys())
               if name != "model" and old.get(name) != new.get(name)]
    if old.get("model") != new.get("model"):
        changed.append(f"the VAD model changed: silero-vad "
                       f"{(old.get('model') or {}).get('silero-vad')} -> "
                       f"{(new.get('model') or {}).get('silero-vad')}")
    return ", ".join(changed)


def config_changes(old: dict, new: dict) -> str:
    """What differs between two job configs, in words."""
    return "; ".join(_describe(key, old.get(key), new.get(key))
                     for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key))
