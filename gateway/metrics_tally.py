"""Observations of the request path, added up in plain numbers and handed to
prometheus-client in bulk.

A pass-through request observes four histograms and two counters (request, stage, hop,
replica). Through prometheus-client each observation takes its own checks, a Python loop over
the buckets and a lock per value changed. A `Tally` instead adds the observation to its
bucket's count under one lock; the counts go to the metric at most `FLUSH_SECONDS` after the
first one pending (a timer on the event loop), before every collection of the registry (a
collector registered ahead of the metrics), and at exit. So a scrape sees every observation
made before it. The latest exemplar of each bucket goes with its counts, as prometheus-client
keeps it. With several workers, which share their values through files that any worker's
scrape reads, observations are handed over at once (`Tallies(direct=True)`): a worker cannot
flush another's tallies.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

__all__ = ["FLUSH_SECONDS", "Tallies", "Tally", "tallies"]

FLUSH_SECONDS = 0.05


class Tally:
    """One series' pending observations: a counter's increments, or a histogram's counts
    per bucket (and sum)."""

    __slots__ = ("_bounds", "_counts", "_exemplars", "_sum", "_tallies", "child", "pending")

    def __init__(self, tallies: Tallies, child: Any) -> None:
        self._tallies = tallies
        self.child = child
        # A histogram's child has its bucket bounds; a counter's has none.
        self._bounds: list[float] | None = getattr(child, "_upper_bounds", None)
        self._counts = [0] * len(self._bounds) if self._bounds is not None else []
        self._sum = 0.0
        self._exemplars: dict[int, Exemplar] = {}
        self.pending = False

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """A histogram's `observe`; `exemplar` labels as prometheus-client takes them."""
        assert self._bounds is not None
        # The first bucket whose bound is at least `amount` (NaN is in none: only the sum).
        bucket = bisect_left(self._bounds, amount) if amount == amount else -1
        tallies = self._tallies
        with tallies.lock:
            if bucket >= 0:
                self._counts[bucket] += 1
                if exemplar:
                    self._exemplars[bucket] = Exemplar(exemplar, amount, time.time())
            self._sum += amount
            first = tallies.add(self)
        if first:
            tallies.schedule()

    def inc(self, amount: float = 1.0) -> None:
        """A counter's `inc`."""
        tallies = self._tallies
        with tallies.lock:
            self._sum += amount
            first = tallies.add(self)
        if first:
            tallies.schedule()

    def take(self) -> tuple[list[int], float, dict[int, Exemplar]]:
        """What is pending, now cleared (under the tallies' lock)."""
        taken = self._counts, self._sum, self._exemplars
        self._counts = [0] * len(self._counts)
        self._sum = 0.0
        self._exemplars = {}
        self.pending = False
        return taken

    def apply(self, counts: list[int], total: float, exemplars: dict[int, Exemplar]) -> None:
        """Hand taken observations to the metric."""
        child = self.child
        if self._bounds is None:
            child.inc(total)
            return
        # The values a histogram's observe changes, changed once for all its observations.
        buckets = child._buckets
        for bucket, count in enumerate(counts):
            if count:
                buckets[bucket].inc(count)
        for bucket, exemplar in exemplars.items():
            buckets[bucket].set_exemplar(exemplar)
        child._sum.inc(total)


class Tallies:
    """The tallies of one registry, and when they are handed over."""

    def __init__(self, flush_seconds: float = FLUSH_SECONDS, direct: bool = False) -> None:
        self.lock = threading.Lock()
        self.flush_seconds = flush_seconds
        self.direct = direct
        self._pending: list[Tally] = []
        self._scheduled: asyncio.AbstractEventLoop | None = None
        _ALL.add(self)

    def of(self, child: Any) -> Tally:
        """A tally of a counter's or histogram's child (``metric.labels(...)``), for the
        caller to keep. A histogram's child not laid out as prometheus-client's are (another
        version) is observed directly."""
        if self.direct or (
            getattr(child, "_upper_bounds", None) is not None
            and not (hasattr(child, "_buckets") and hasattr(child, "_sum"))
        ):
            return _Direct(self, child)
        return Tally(self, child)

    def add(self, tally: Tally) -> bool:
        """Mark `tally` pending (under the lock); whether it is the first."""
        if tally.pending:
            return False
        tally.pending = True
        self._pending.append(tally)
        return len(self._pending) == 1

    def schedule(self) -> None:
        """Flush soon on the running event loop, or now off any."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        """Hand every pending observation to its metric."""
        with self.lock:
            self._scheduled = None
            if not self._pending:
                return
            taken = [(tally, tally.take()) for tally in self._pending]
            self._pending.clear()
        for tally, (counts, total, exemplars) in taken:
            tally.apply(counts, total, exemplars)

    def collector(self) -> _Flush:
        """A collector to register ahead of the metrics: collecting the registry flushes."""
        return _Flush(self)


class _Direct(Tally):
    """A tally that observes at once (for children of an unknown layout)."""

    __slots__ = ()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        self.child.observe(amount, exemplar)

    def inc(self, amount: float = 1.0) -> None:
        self.child.inc(amount)


class _Flush:
    """Flushes the tallies when its registry is collected; describes and yields nothing."""

    def __init__(self, tallies: Tallies) -> None:
        self.tallies = tallies

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        self.tallies.flush()
        return ()


# The tallies of each registry, its flushing collector registered first.
_OF: weakref.WeakKeyDictionary[CollectorRegistry, Tallies] = weakref.WeakKeyDictionary()
_ALL: weakref.WeakSet[Tallies] = weakref.WeakSet()


def tallies(registry: CollectorRegistry, direct: bool = False) -> Tallies:
    """The tallies of `registry` (`direct`: observing at once, for a registry of shared
    values); made with the registry's first tallied metric, whose collector must come first
    (register nothing tallied before calling this)."""
    found = _OF.get(registry)
    if found is None:
        found = _OF[registry] = Tallies(direct=direct)
        registry.register(found.collector())
    return found


@atexit.register
def _flush_all() -> None:
    # A worker's last observations reach the shared files before it exits.
    for pending in list(_ALL):
        pending.flush()
