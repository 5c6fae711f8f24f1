"""torch, imported on first use: ``from speechdump.lazy import torch``.

A stage's pre-flight reads a toolkit's declaration and its model's config; importing torch for
that would cost about a second of every stage's start (torch alone, before any toolkit).
Modules the pre-flight imports therefore bind this stand-in, which imports the real module the
first time an attribute is read. Every read is passed on to the real module (one lookup in
``sys.modules`` more: nothing beside a forward pass), so what is set on it later (a test's
monkeypatch, a library's own rebinding) is what this reads too.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """A module imported when one of its attributes is first read."""

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self.__name__), attribute)


torch = LazyModule("torch")
functional = LazyModule("torch.nn.functional")
