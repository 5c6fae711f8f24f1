"""Weight files checked against the model they are loaded into, before any output.

Every toolkit loads weights non-strictly: ESPnet's ``build_model_from_file``, SpeechBrain's
parameter transfer and Resemblyzer call ``load_state_dict(strict=False)``, and transformers
initialises missing weights at random with a log warning. A file of another architecture, or a
training checkpoint (a dict of model, optimizer, ... states) where a model state belongs, then
gives a partly or wholly random model whose vectors look plausible and are wrong. The extractors
compare the model's tensors with the file's here and refuse, naming the file, the counts and the
first names, instead.

Files are read with ``torch.load(map_location="cpu", weights_only=True)``: nothing in the file is
executed, and with ``mmap`` (files of the zip format) only the tensors' headers are read until a
tensor is used, so reading the names and shapes is cheap enough for the pre-flight.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from speechdump.errors import ModelError
from speechdump.lazy import torch

NAMES_SHOWN = 4  # names listed per kind of mismatch in a message

# Entries that training loops save beside the model state (ESPnet's trainer: model, reporter,
# optimizers, schedulers, scaler; Resemblyzer: step, model_state, optimizer_state; others:
# optimizer, lr_scheduler, epoch, ...): a file holding one of them is a training checkpoint.
TRAINING_ENTRIES = frozenset({
    "optimizer", "optimizers", "optimizer_state", "optimizer_state_dict", "scheduler",
    "schedulers", "lr_scheduler", "scaler", "reporter", "epoch", "step", "global_step"})

# Missing tensors that do not change inference: BatchNorm's batch counter is used only in
# training (with momentum=None), and PyTorch itself fills it in for files of old versions.
HARMLESS_MISSING = ("num_batches_tracked",)


def read(path: str, hint: str = "") -> Any:
    """What ``path`` holds, read without running code from it; ModelError naming the file (and
    ``hint``: what to pass instead) if it is not a torch file or holds Python objects beyond
    tensors and containers (a training checkpoint, typically)."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
        return torch.load(path, map_location="cpu", weights_only=True)  # old format: no mmap
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ModelError(f"cannot read weights from {path}: {_first_line(exc)}") from exc
        keys = top_level_keys(path)
        if keys is not None and TRAINING_ENTRIES & set(keys):
            raise ModelError(training_checkpoint_message(path, keys) + hint) from exc
        raise ModelError(f"{path} is not a model state: torch.load(weights_only=True) refuses "
                         f"it ({_refusal(exc)}){hint}") from exc
    except Exception as exc:  # the unpickler raises whatever it meets in a file of another kind
        raise ModelError(f"cannot read weights from {path}: {type(exc).__name__}: "
                         f"{_first_line(exc)}") from exc


def as_state(obj: Any, path: str, hint: str = "") -> Dict[str, torch.Tensor]:
    """``obj`` (read from ``path``) as a model state: a flat mapping of names to tensors. A
    training checkpoint, or anything else, is a ModelError naming the file (``hint`` says
    what to pass instead)."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a model state (a mapping "
                         f"of tensor names to tensors){hint}")
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        keys = [str(k) for k in obj]
        if TRAINING_ENTRIES & set(keys):
            raise ModelError(training_checkpoint_message(path, keys) + hint)
        raise ModelError(f"{path} is not a model state: {len(others)} of its {len(keys)} entries "
                         f"are not tensors ({_names(map(str, others))}){hint}")
    return dict(obj)


def training_checkpoint_message(path: str, keys: Sequence[str]) -> str:
    shown = ", ".join(list(keys)[:6]) + (", ..." if len(keys) > 6 else "")
    return f"{path} is a training checkpoint (keys {shown}), not a model state"


def compare(path: str, expected: Mapping[str, Tuple[int, ...]],
            found: Mapping[str, Tuple[int, ...]], allow_unexpected: Collection[str] = (),
            what: str = "") -> None:
    """Refuses ``found`` (the file's tensor shapes) unless it holds exactly the model's
    (``expected``), but for ``allow_unexpected`` extra names and ``HARMLESS_MISSING``
    absent ones."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected and k not in allow_unexpected]
    mismatched = [(k, tuple(found[k]), tuple(expected[k])) for k in expected
                  if k in found and tuple(found[k]) != tuple(expected[k])]
    if all(k.rsplit(".", 1)[-1] in HARMLESS_MISSING for k in missing):
        if not (unexpected or mismatched):
            return
        missing = []  # only counters missing: not worth a mention beside the real problems
    refuse(path, len(expected), missing, unexpected, mismatched, what)


def refuse(path: str, total: int, missing: Sequence[str], unexpected: Sequence[str],
           mismatched: Sequence[Tuple[str, Tuple[int, ...], Tuple[int, ...]]],
           what: str = "") -> None:
    """ModelError listing what does not fit, if anything does not (``what``: the model, e.g.
    "the model built from <config>"; ``total``: its number of tensors)."""
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {total} tensors of the model "
                        f"{_are(missing, 'is', 'are')} missing from the file ({_names(missing)})")
    if unexpected:
        problems.append(f"{_count(unexpected)} in the file {_are(unexpected, 'is', 'are')} not "
                        f"in the model ({_names(unexpected)})")
    if mismatched:
        shapes = [f"{k} {list(f)} in the file, {list(m)} in the model" for k, f, m in mismatched]
        verb = _are(mismatched, "has another shape", "have other shapes")
        problems.append(f"{_count(mismatched)} {verb} ({_names(shapes)})")
    if problems:
        raise ModelError(f"{path}: {', '.join(problems)}: these weights do not belong to "
                         f"{what or 'this model'}; refusing to run it partly untrained")


def check_module(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str,
                 allow_unexpected: Collection[str] = (), what: str = "") -> None:
    """``compare`` of ``module``'s state dict with ``state`` (read from ``path``)."""
    compare(path, shapes(module.state_dict()), shapes(state),
            allow_unexpected=allow_unexpected, what=what)


def load(module: torch.nn.Module, state: Mapping[str, torch.Tensor],
         allow_unexpected: Collection[str] = ()) -> None:
    """Loads ``state`` into ``module`` strictly, once ``check_module`` has passed: the allowed
    extra tensors are left out, and the ``HARMLESS_MISSING`` counters the file lacks keep the
    module's own values (BatchNorm's ``num_batches_tracked``, read in training only), so torch
    itself refuses anything else."""
    own = module.state_dict()
    full = {k: v for k, v in state.items() if k not in allow_unexpected}
    full.update({k: v for k, v in own.items()
                 if k not in full and k.rsplit(".", 1)[-1] in HARMLESS_MISSING})
    module.load_state_dict(full, strict=True)


def shapes(state: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def top_level_keys(path: str) -> Optional[List[str]]:
    """The keys of the dict a zip-format torch file holds, read without building any of its
    objects (every class it names is a stand-in): for naming what a file that ``weights_only``
    refuses holds, e.g. ESPnet's ``checkpoint.pth`` (numpy floats in its reporter). None if
    the file is not such a dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                return None
            with archive.open(name) as f:
                obj = _StandInUnpickler(f).load()
    except Exception:  # only used for a message: any failure means "unknown"
        return None
    return [str(k) for k in obj] if isinstance(obj, dict) else None


class _StandIn:
    """Whatever class a pickle names: takes any arguments and state, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass


class _Dict(dict):
    """An OrderedDict of the pickle (a state dict: its ``_metadata`` attribute is set too)."""


class _StandInUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        return _StandIn

    def persistent_load(self, pid):
        return None  # the tensors' storages are never read


def _count(items: Sequence) -> str:
    return f"{len(items)} tensor{'' if len(items) == 1 else 's'}"


def _are(items: Sequence, one: str, many: str) -> str:
    return one if len(items) == 1 else many


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")


def _refusal(exc: BaseException) -> str:
    """The reason in torch's weights_only error (what follows "WeightsUnpickler error:")."""
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\.\s|\n|$)", str(exc))
    return match[1].strip() if match else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
