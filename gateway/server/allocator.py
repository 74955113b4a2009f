"""glibc allocator settings for a process that moves megabyte-sized tensors.

By default glibc serves each allocation above 128 KiB-32 MiB (adaptive) with a fresh mmap and
gives it back at once, so every 1 MiB request body costs hundreds of page faults. Keeping such
buffers on the heap, and trimming it only past 256 MiB, makes them reusable across requests.
A trim every few seconds (`trim_periodically`) gives back what a burst of large bodies left
free, so that memory returns near its baseline after them.

``malloc_trim`` alone does not give it all back: it returns the free chunks of every arena and
the free top of the main one (the event loop's), never the free top of a thread's arena, and
that is where the bodies decoded and encoded off the loop (`gateway.offload`) end up once
freed (tens of MiB per thread after a burst, held for good). glibc returns a thread arena's
top only when a large chunk of that arena is freed while the top is over the trim threshold.
So each thread of the loop's executor keeps a small block in its own arena (`adopt_thread`,
the executor's initializer), and a trim lowers the threshold for a moment and shrinks every
block, which frees a large chunk in each of those arenas: their tops go back from the
trimming thread, whether their own threads are idle or busy.
Set GATEWAY_MALLOC_TUNING=0 to keep glibc's defaults (and not trim).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("gateway.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for the mmap threshold on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
# The trim threshold while the blocks shrink: glibc's default, so an arena keeps no more of
# its free top than it would untuned.
_TRIM_NOW = 128 << 10
# A block shrinks from _BLOCK to _STUB bytes: the rest is freed, and a free of 64 KiB or more
# (glibc's FASTBIN_CONSOLIDATION_THRESHOLD) is what makes glibc trim the arena it belongs to.
# Under the 128 KiB mmap threshold glibc starts with, so a block is on the heap in any case.
_BLOCK = 96 << 10
_STUB = 16


@functools.cache
def _glibc() -> Any:
    """The C library, with the allocator functions used here typed; None without them
    (musl and others)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        functions = (libc.mallopt, libc.malloc_trim, libc.malloc, libc.realloc)
    except (OSError, AttributeError):
        return None
    mallopt, malloc_trim, malloc, realloc = functions
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc.argtypes = [ctypes.c_size_t]
    malloc.restype = ctypes.c_void_p
    realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    realloc.restype = ctypes.c_void_p
    return libc


def _libc() -> Any:
    """glibc, or None where tuning does not apply (turned off, or not glibc)."""
    if os.environ.get("GATEWAY_MALLOC_TUNING", "1") == "0":
        return None
    return _glibc()


def tune() -> bool:
    """Apply the settings; False where they do not apply (not glibc, or turned off)."""
    libc = _libc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not applied:
        logger.debug("mallopt refused the allocator settings")
    return applied


class _Blocks:
    """One block in the arena of each adopted thread. Process-wide, as glibc's arenas are."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: list[int] = []

    def adopt(self, libc: Any) -> None:
        block = libc.malloc(_BLOCK)  # in the calling thread's arena
        if block:
            with self._lock:
                self._blocks.append(block)

    def trim(self, libc: Any) -> None:
        """Give back the free top of every arena that holds a block."""
        with self._lock:
            if not self._blocks:
                return
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NOW)
            try:
                for index, block in enumerate(self._blocks):
                    # In place; the freed rest trims the block's arena (realloc works in the
                    # arena a block belongs to, whichever thread calls it).
                    stub = libc.realloc(block, _STUB) or block
                    self._blocks[index] = libc.realloc(stub, _BLOCK) or stub
            finally:
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


_blocks = _Blocks()


def adopt_thread() -> None:
    """Have trims reach the calling thread's arena: a thread pool's initializer, for the pools
    that do the heavy work (decoding and encoding large bodies)."""
    libc = _libc()
    if libc is not None:
        _blocks.adopt(libc)


def _trim(libc: Any) -> int:
    trimmed = int(libc.malloc_trim(0))
    _blocks.trim(libc)
    return trimmed


# Seconds between trims: memory a burst of large bodies left on the heap (in every arena the
# decoding threads used) goes back to the system within about this long.
TRIM_INTERVAL = 5.0


def trimmer() -> Callable[[], object] | None:
    """A trim that gives the free memory of every arena (the main one, and those of the adopted
    threads, tops included) back to the system; None where there is none (not glibc, or tuning
    turned off)."""
    libc = _libc()
    return None if libc is None else functools.partial(_trim, libc)


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
