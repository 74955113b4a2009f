"""Which event loop a server process runs on: uvloop when it is installed ("auto", the
default), or asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["run"]


def run(main: Coroutine[Any, Any, None], kind: str = "auto") -> None:
    """Run `main` to completion on a new loop of `kind` ("uvloop" fails without uvloop)."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                main.close()
                raise
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
