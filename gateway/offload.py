"""Work too large for the event loop, run in a thread beside it.

Decoding or encoding a large payload holds the interpreter for as long as it takes; on the
event loop that is as long as every other request (and the liveness probe) waits. In a thread,
the interpreter switches back to the loop at least every few milliseconds between its Python
steps, and numpy and zlib let it go during their bulk work. A thread costs about 50 us a call,
so small payloads, by far the most common, stay on the loop.

`weight` estimates the work: bytes of text to parse, plus BYTES data (a Python step per
element, some 16 times the cost of a byte of JSON). `run` moves work at or above `HEAVY`, and
imports numpy in a thread before the first work it keeps on the loop (`gateway.lazy_numpy`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import TypeVar

from gateway import lazy_numpy

__all__ = ["HEAVY", "run", "weight"]

T = TypeVar("T")

# About a millisecond of parsing: a thread hop costs a twentieth of that.
HEAVY = 256 << 10
# BYTES data: up to one element per 4 bytes, each a few Python steps.
_PER_BYTES_ELEMENT_BYTE = 16


def weight(text: int, bytes_data: int = 0) -> int:
    """The work of decoding or encoding `text` bytes of JSON or protobuf and `bytes_data`
    bytes of BYTES tensor data."""
    return text + _PER_BYTES_ELEMENT_BYTE * bytes_data


async def run(work: Callable[[], T], heft: int, uses_numpy: bool = True) -> T:
    """`work()`, on the loop when `heft` (from `weight`) is under `HEAVY`, else in the loop's
    default executor (with the caller's context: request id, deadline, current span). Work
    that `uses_numpy` never imports it on the loop."""
    if heft < HEAVY:
        if uses_numpy and lazy_numpy.loaded() is None:
            await lazy_numpy.load()
        return work()
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(None, functools.partial(context.run, work))
