"""Fixtures shared by test folders."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def allocation_peak() -> Iterator[Callable[[], int]]:
    """Peak bytes allocated since the test began (by every thread of this process: numpy's
    and in-process servers' allocations too)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
