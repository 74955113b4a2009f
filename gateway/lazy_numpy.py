"""numpy, imported when a module first uses it.

A gateway that passes bodies through never builds an array, so it does not pay for numpy at
start (a fifth of its start-up time and about 15 MiB of its memory). A module binds ``np``
with `bind` instead of importing numpy: the name holds a stand-in until its first attribute
lookup, which imports numpy and rebinds the name in that module to the real module, so every
later lookup costs what a global lookup always does.

Importing numpy takes about 0.15 s of interpreter time. Code on the event loop that is about
to use numpy for the first time awaits `load` first, which imports it in a thread.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["bind", "load", "loaded"]


class _StandIn:
    __slots__ = ("_name", "_namespace")

    def __init__(self, namespace: dict[str, Any], name: str) -> None:
        self._namespace = namespace
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        numpy = importlib.import_module("numpy")
        self._namespace[self._name] = numpy
        return getattr(numpy, attribute)

    def __repr__(self) -> str:
        return "<numpy, imported on first use>"


def bind(namespace: dict[str, Any], name: str = "np") -> Any:
    """A stand-in for numpy that makes ``namespace[name]`` numpy when it is first used."""
    return _StandIn(namespace, name)


def loaded() -> ModuleType | None:
    """numpy if it is imported already (asking never imports it), else None."""
    module = sys.modules.get("numpy")
    if module is None or getattr(module.__spec__, "_initializing", False):
        return None
    return module


async def load() -> None:
    """Import numpy in a thread, unless it is imported already."""
    if loaded() is None:
        await asyncio.to_thread(importlib.import_module, "numpy")
