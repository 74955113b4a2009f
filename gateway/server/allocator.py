"""glibc allocator settings for a process that moves megabyte-sized tensors.

By default glibc serves each allocation above 128 KiB-32 MiB (adaptive) with a fresh mmap and
gives it back at once, so every 1 MiB request body costs hundreds of page faults. Keeping such
buffers on the heap, and trimming it only past 256 MiB, makes them reusable across requests.
Set GATEWAY_MALLOC_TUNING=0 to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger("gateway.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's ceiling for the mmap threshold on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


def tune() -> bool:
    """Apply the settings; False where they do not apply (not glibc, or turned off)."""
    if os.environ.get("GATEWAY_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not applied:
        logger.debug("mallopt refused the allocator settings")
    return applied
