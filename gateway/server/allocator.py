"""glibc allocator settings for a process that moves megabyte-sized tensors.

By default glibc serves each allocation above 128 KiB-32 MiB (adaptive) with a fresh mmap and
gives it back at once, so every 1 MiB request body costs hundreds of page faults. Keeping such
buffers on the heap, and trimming it only past 256 MiB, makes them reusable across requests.
A heap trim every few seconds (`trim_periodically`) gives back what a burst of large bodies
left free, in every arena, so that memory returns near its baseline after them.
Set GATEWAY_MALLOC_TUNING=0 to keep glibc's defaults (and not trim).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("gateway.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for the mmap threshold on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def _libc(function: str) -> Any:
    """glibc's `function`, or None (tuning turned off, or a libc without it: musl...)."""
    if os.environ.get("GATEWAY_MALLOC_TUNING", "1") == "0":
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """Apply the settings; False where they do not apply (not glibc, or turned off)."""
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not applied:
        logger.debug("mallopt refused the allocator settings")
    return applied


# Seconds between trims: memory a burst of large bodies left on the heap (in every arena the
# decoding threads used) goes back to the system within about this long.
TRIM_INTERVAL = 5.0


def trimmer() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, which gives the free memory of every arena back to the
    system; None where there is none (not glibc, or tuning turned off)."""
    trim = _libc("malloc_trim")
    return None if trim is None else functools.partial(trim, 0)


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Trim the heap every `interval` seconds, in a thread (a trim walks every arena), until
    cancelled."""
    trim = trimmer()
    if trim is None:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        await loop.run_in_executor(None, trim)
