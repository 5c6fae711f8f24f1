"""What every extractor declares and provides.

An extractor is one module in this package holding one class registered with
``@register("<toolkit>")`` (``speechdump.extractors``). The class declares, once:

* ``options``: its own options (name, type, default, allowed values, one line of help). The
  command line of ``pyscripts/extract.py``, the stages' ``--extractor_opts`` pass-through, the
  pre-flight and ``--help`` all come from them; ``__init__`` takes exactly these keywords (the
  registry checks it), after ``model`` and ``device``;
* ``streams``: what it writes per utterance, each a ``Stream`` (float or int; vector, frames or
  tokens; frame shift; dimension). Where they depend on the options or the model, ``check``
  returns them before the model is loaded and ``__init__`` sets ``self.streams``;
* ``check(model, options)``: the cheap pre-flight run on the submitting node before any job is
  launched: the model path against the toolkit's layout, options that only make sense together.
"""

from __future__ import annotations

import abc
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from speechdump.errors import OptionError

FLOAT, INT = "float", "int"
VECTOR, FRAMES, TOKENS = "vector", "frames", "tokens"


def looks_like_local_path(model: str) -> bool:
    """A model name that can only be meant as a local path (a hub name is ``owner/name``)."""
    return (os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
            or os.path.exists(model))


def parse_bool(text: str) -> bool:
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got '{text}'")


@dataclass(frozen=True)
class Option:
    """One option of an extractor, as ``--<name> <value>`` on the command line.

    ``type`` is int, float, str or bool (``true``/``false``); a ``None`` default means "unset"
    (the extractor decides). ``choices`` lists the allowed values; ``check`` returns what is
    wrong with a value (or None), for constraints such as "positive".
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[Sequence[Any]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None

    def parse(self, value: Any) -> Any:
        """A command-line string (or a Python value) -> the checked value; OptionError if bad."""
        if value is None:
            return None
        try:
            if self.type is bool:
                parsed = value if isinstance(value, bool) else parse_bool(value)
            elif self.type is float and isinstance(value, int) and not isinstance(value, bool):
                parsed = float(value)
            elif isinstance(value, self.type) and not isinstance(value, bool):
                parsed = value
            else:
                parsed = self.type(str(value).strip())
        except ValueError:
            raise OptionError(f"--{self.name} '{value}': expected {self.type.__name__}") from None
        if self.choices is not None and parsed not in self.choices:
            raise OptionError(f"--{self.name} '{value}': choose from "
                              f"{', '.join(map(str, self.choices))}")
        problem = self.check(parsed) if self.check else None
        if problem:
            raise OptionError(f"--{self.name} {value}: {problem}")
        return parsed

    def describe(self) -> str:
        """One line of help: what it does, its allowed values and default."""
        allowed = f" ({'|'.join(map(str, self.choices))})" if self.choices else ""
        default = "unset" if self.default is None else str(self.default).lower() \
            if self.type is bool else self.default
        return f"{self.help}{allowed}; default: {default}"


def positive(value) -> Optional[str]:
    return None if value > 0 else "must be positive"


def non_negative(value) -> Optional[str]:
    return None if value >= 0 else "must be >= 0"


@dataclass(frozen=True)
class Stream:
    """One output of an extractor per utterance, stored as its own ark/scp.

    ``name`` is "" for an extractor's single unnamed stream (written as ``<tag>.scp``), else
    the suffix of ``<tag>_<name>.scp``. ``kind``: ``float`` (cast to ``--dtype``, may be
    compressed) or ``int`` (int32, never cast). ``shape``: ``vector`` ([dim] per utterance),
    ``frames`` ([frames, dim]) or ``tokens`` ([frames], or [frames, dim codebooks]).
    ``frame_shift``: seconds between frames, where frame level (None where not constant).
    ``exact``: a float stream kept float32 whatever ``--dtype`` says (e.g. time stamps).
    """

    name: str = ""
    kind: str = FLOAT
    shape: str = VECTOR
    frame_shift: Optional[float] = None
    dim: Optional[int] = None
    exact: bool = False

    def __post_init__(self):
        if self.kind not in (FLOAT, INT):
            raise ValueError(f"stream '{self.name}': kind must be {FLOAT} or {INT}")
        if self.shape not in (VECTOR, FRAMES, TOKENS):
            raise ValueError(f"stream '{self.name}': shape must be {VECTOR}, {FRAMES} or "
                             f"{TOKENS}")

    @property
    def frame_level(self) -> bool:
        return self.shape != VECTOR

    def stem(self, tag: str) -> str:
        """The file stem of this stream's outputs for ``--tag tag``."""
        return f"{tag}_{self.name}" if self.name else tag

    def storage_dtype(self, dtype: str):
        """The numpy type this stream is written in, for ``--dtype dtype``."""
        if self.kind == INT:
            return np.int32
        return np.float32 if self.exact else np.dtype(dtype).type

    def to_record(self) -> Dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": self.shape,
                "frame_shift": self.frame_shift, "dim": self.dim, "exact": self.exact}

    @classmethod
    def from_record(cls, record: Dict[str, Any]) -> "Stream":
        return cls(**record)


def check_storage(streams: Sequence[Stream], dtype: str, compress: bool) -> None:
    """``--dtype`` and ``--compress`` apply to float streams only (compression to float32
    matrices): a combination that cannot apply to any stream is an OptionError."""
    floats = [s for s in streams if s.kind == FLOAT and not s.exact]
    if dtype != "float32" and not floats:
        raise OptionError(f"--dtype {dtype}: this toolkit writes no float stream to store in it")
    if compress:
        if dtype != "float32":
            raise OptionError(f"--compress true: Kaldi compresses float32 matrices only, not "
                              f"--dtype {dtype}")
        if not any(s.shape == FRAMES for s in floats):
            raise OptionError("--compress true: Kaldi compresses matrices only, and this toolkit "
                              "writes no float frame-level stream")


class BatchState(threading.local):
    """What a forward pass tells the model's patched code about its batch (samples or frames per
    item), kept per thread: forward passes that run at once never read each other's."""

    lengths: Any = None
    frames: Any = None


class Extractor(abc.ABC):
    """Turns waveforms into arrays in two steps the engine can overlap.

    ``prepare`` runs in loader threads, one utterance at a time (per-utterance normalisation,
    features, crops); it raises ``ValueError(reason)`` for audio the model cannot use.
    ``forward`` runs the model on a batch of prepared items and returns one output each, trimmed
    to that item's true length: the same output the item would give alone: an array for a
    single unnamed stream, else ``{stream name: array}``.
    """

    name: str = ""  # the toolkit name, set by @register
    options: Sequence[Option] = ()
    # Whether --model is required, and what it is (for --help and messages).
    needs_model: bool = False
    model_help: str = ""
    streams: Sequence[Stream] = (Stream(),)
    # Packages whose versions the output depends on, recorded with every job.
    packages: Sequence[str] = ()

    sample_rate: int  # the rate ``prepare`` expects its waveform at
    min_seconds: float = 0.0  # shorter input is rejected as a bad utterance
    # True when the model cannot be told true lengths (no masks): the engine then batches only
    # items of identical cost, so no item is ever padded.
    equal_lengths_only: bool = False
    # A cap the extractor puts on --batch_size (None: none), e.g. where batching is slower.
    max_batch_size: Optional[int] = None
    # True when ``forward`` may run on several threads at once: it keeps no per-batch state on
    # the instance (or keeps it thread-local), so a job's cores can run single-threaded passes.
    concurrent_forward: bool = False
    # How a CPU job gives its cores to the model by default (``--cpu_layout auto``): "intra_op",
    # one forward pass on all of them (torch threads; the plain loop's way), or "passes", one
    # single-threaded pass per core at once (needs ``concurrent_forward``). Declared from
    # bench/cpu_layout.py, never measured at run time, so a rerun makes the same choice.
    cpu_layout: str = "intra_op"
    # Raised when the toolkit's output for the same audio, options, model and libraries changes
    # (a measure corrected, a default changed): jobs of an earlier revision then run again
    # instead of being reused. Recorded in a job's config from 2 on, so the records written
    # before revisions existed stand for revision 1.
    revision: int = 1
    # True when the engine should call ``prepare_decoded`` with the audio as decoded (kept until
    # then; otherwise freed before ``prepare``).
    measures_decoded: bool = False

    @classmethod
    def check(cls, model: Optional[str], options: Dict[str, Any]) -> List[Stream]:
        """Pre-flight without loading weights: raises OptionError / ModelError for a model path
        not in the toolkit's layout or options that do not fit together; returns the streams a
        job will write (dimensions may be None until the model is loaded). ``options`` holds
        every declared option, defaults filled in."""
        if model and not cls.needs_model and not cls.model_help:
            raise OptionError(f"{cls.name} takes no model; got --model '{model}' (leave it "
                              "empty)")
        if cls.needs_model and not model:
            raise OptionError(f"{cls.name} needs --model: {cls.model_help}")
        return list(cls.streams)

    @classmethod
    def model_files(cls, model: Optional[str]) -> List[str]:
        """The files that make up ``model``, whose sizes and contents the output depends on:
        every file under a directory, or the file itself; none for a hub name or no model."""
        if not model:
            return []
        path = os.path.expanduser(model)
        if os.path.isdir(path):
            return sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                          for name in names if not name.startswith("."))
        return [path] if os.path.isfile(path) else []

    @property
    def frame_level(self) -> bool:
        return any(stream.frame_level for stream in self.streams)

    @abc.abstractmethod
    def prepare(self, wave: np.ndarray) -> Any:
        ...

    def prepare_decoded(self, wave: np.ndarray, decoded: np.ndarray) -> Any:
        """``prepare`` for an extractor that also measures the audio as decoded
        (``measures_decoded``; ``decoded``: ``[T, C]`` float32, the channels in use at the
        file's own rate, before downmixing, resampling and trimming)."""
        return self.prepare(wave)

    @abc.abstractmethod
    def cost(self, prepared: Any) -> float:
        """Seconds of audio the item puts through the model: the sort key for batching."""

    def batch_cost(self, costs: Sequence[float]) -> float:
        """Seconds a batch of these items costs; by default padded to its longest item."""
        return max(costs) * len(costs)

    @abc.abstractmethod
    def forward(self, batch: List[Any]) -> List[Any]:
        ...


def _channel_problem(value: str) -> Optional[str]:
    return None if value == "mean" or value.isdigit() else "expected mean or a channel number"


# Options of every toolkit, used by the engine's loader rather than by the extractor.
INPUT_OPTIONS = (
    Option("channel", str, "mean", "channel of multi-channel audio: mean (of all channels) or "
           "N (0 = the first, as Kaldi's --channel)", check=_channel_problem),
    Option("max_overshoot", float, 0.5, "seconds a segment may end past its recording, where "
           "it is clipped (Kaldi's extract-segments --max-overshoot); further is a bad "
           "utterance", check=non_negative),
)


# Files that mark each toolkit's model layout, for saying what a wrong --model holds.
_LAYOUTS = (("hyperparams.yaml", "a SpeechBrain model (--toolkit speechbrain)"),
            ("meta.yaml", "an ESPnet model-zoo archive (--toolkit espnet or rawnet)"),
            ("config.yaml", "an ESPnet model (--toolkit espnet or rawnet)"),
            ("preprocessor_config.json", "a transformers model (--toolkit ssl)"))


def layout_hint(path: str) -> str:
    """`` (it looks like <layout>)`` for a directory in another toolkit's layout, else ""."""
    if not os.path.isdir(path):
        return ""
    for marker, what in _LAYOUTS:
        if os.path.isfile(os.path.join(path, marker)):
            return f" (it holds {marker}: {what})"
    return " (it holds none of the files a known toolkit loads)"
