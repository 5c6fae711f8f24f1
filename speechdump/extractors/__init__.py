"""Extractor registry: ``--toolkit`` names map to classes registered with ``@register``.

Every module of this package registers its extractor when imported. ``BUILTIN`` names the
module of each toolkit, so a process imports only the one it runs, and a module imports its
heavy packages (torch, transformers, SpeechBrain, ESPnet) only where it uses them: the stage's
pre-flight reads a toolkit's declaration and its model's config without importing torch (about
a second of every stage's start). Modules outside the package register the same way and are
found through the environment variable ``SPEECHDUMP_PLUGINS`` (comma-separated module names,
importable on the jobs' Python path): a new toolkit without a change to speechdump.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from typing import Any, Dict, List, Optional

from speechdump.errors import OptionError
from speechdump.extractors.base import INPUT_OPTIONS, Extractor, Option

PLUGINS_ENV = "SPEECHDUMP_PLUGINS"
# toolkit -> its module in this package (test_extractor_interface checks it against them all)
BUILTIN = {"codec": "codec", "espnet": "espnet", "fbank": "kaldi_feats", "mfcc": "kaldi_feats",
           "quality": "quality",
           "rawnet": "espnet", "resemblyzer": "resemblyzer", "speechbrain": "speechbrain",
           "silero_vad": "silero_vad", "ssl": "ssl", "w2v_bert": "w2v_bert", "whisper": "whisper",
           "xvector": "xvector"}
_REGISTRY: Dict[str, type] = {}
_plugins_imported = False


def register(name: str):
    """Class decorator: makes an Extractor subclass the toolkit ``name``.

    Its declared options must be exactly the keywords its ``__init__`` takes after ``model`` and
    ``device``, with the same defaults: the declaration is what the command line offers."""

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Extractor)):
            raise TypeError(f"@register('{name}'): {cls!r} is not an Extractor subclass")
        _check_declaration(name, cls)
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"toolkit '{name}' is registered twice: {_REGISTRY[name]} and {cls}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _check_declaration(name: str, cls: type) -> None:
    params = dict(inspect.signature(cls.__init__).parameters)
    for fixed in ("self", "model", "device"):
        if fixed not in params:
            raise TypeError(f"toolkit '{name}': {cls.__name__}.__init__ must take "
                            f"(model, device, <options>)")
        del params[fixed]
    declared = {option.name: option for option in cls.options}
    clashes = sorted(set(declared) & {o.name for o in INPUT_OPTIONS})
    if clashes or set(params) != set(declared):
        raise TypeError(f"toolkit '{name}': {cls.__name__}.__init__ takes "
                        f"{sorted(params)}, its options declare {sorted(declared)}"
                        + (f" (and {clashes} belong to every toolkit)" if clashes else ""))
    for option in cls.options:
        default = params[option.name].default
        if default is not inspect.Parameter.empty and default != option.default:
            raise TypeError(f"toolkit '{name}': option {option.name} defaults to "
                            f"{option.default!r}, {cls.__name__}.__init__ to {default!r}")


def _import_plugins() -> None:
    global _plugins_imported
    if _plugins_imported:
        return
    _plugins_imported = True
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise OptionError(f"{PLUGINS_ENV}: cannot import '{name}': {exc}") from exc


def import_all() -> None:
    """Imports every module of the package and the plugins (what a test of the table needs)."""
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    _import_plugins()


def available() -> List[str]:
    _import_plugins()
    return sorted(set(BUILTIN) | set(_REGISTRY))


def get_class(toolkit: str) -> type:
    if toolkit in BUILTIN:
        importlib.import_module(f"{__name__}.{BUILTIN[toolkit]}")
    else:
        _import_plugins()
    if toolkit not in _REGISTRY:
        raise OptionError(f"unknown toolkit '{toolkit}'; choose from {', '.join(available())}")
    return _REGISTRY[toolkit]


def declared_options(toolkit: str) -> List[Option]:
    """Every option ``toolkit`` takes: those of every toolkit, then its own."""
    return [*INPUT_OPTIONS, *get_class(toolkit).options]


def option_values(toolkit: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """Every declared option of ``toolkit``: the ``given`` ones parsed and checked, the others at
    their defaults. A name ``toolkit`` does not declare is an OptionError listing its options."""
    options = {option.name: option for option in declared_options(toolkit)}
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise OptionError(f"{toolkit} takes no option {', '.join('--' + o for o in unknown)}; "
                          f"its options: {' '.join('--' + o for o in options)}")
    return {name: option.parse(given[name]) if name in given else option.default
            for name, option in options.items()}


def check(toolkit: str, model: Optional[str], given: Dict[str, Any]):
    """The pre-flight: ``(option values, streams)`` with nothing loaded, or an OptionError /
    ModelError saying what is wrong."""
    values = option_values(toolkit, given)
    own = {option.name: values[option.name] for option in get_class(toolkit).options}
    return values, get_class(toolkit).check(model or None, own)


def load_extractor(toolkit: str, model: Optional[str] = None, device: str = "cpu",
                   **options) -> Extractor:
    """Builds the extractor named ``toolkit``; ``model`` is a local path (each toolkit's layout);
    ``options`` are the toolkit's own (``layers``, ``num_mel_bins``, ...), as Python values or
    command-line strings: an option it does not declare is an OptionError naming it."""
    cls = get_class(toolkit)
    own = {option.name for option in cls.options}
    values = option_values(toolkit, options)
    extractor = cls(model=model or None, device=device,
                    **{name: value for name, value in values.items() if name in own})
    if device.startswith("cuda"):
        # After the toolkit's import: `import speechbrain` turns TF32 on (its "allow_tf32" quirk).
        exact_float32_on_gpu(device)
    return extractor


def exact_float32_on_gpu(device: str = "cuda") -> None:
    """Turns TF32 off for this process's CUDA convolutions and matrix products, and checks on
    ``device`` that float32 stays float32 (``speechdump.compat.exact_float32``).

    cuDNN convolves in TF32 by default (10-bit mantissas), with an algorithm chosen by the batch
    shape, so a padded batch differed from each utterance alone by up to 1e-2 of the hidden
    states' scale on an H200 (bench/RESULTS.md). Outputs must not depend on batching.
    """
    from speechdump import compat

    compat.exact_float32(device)
