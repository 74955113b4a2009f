"""Exemplars with several worker processes, which prometheus-client keeps none of.

In multiprocess mode prometheus-client stores each value in a memory-mapped file of floats;
its `set_exemplar` does nothing and its collector reports no exemplar (a TODO in its
``values.py``). `SharedExemplars` fills that gap for this gateway: the value class it makes
keeps each bucket's latest exemplar in the worker's memory, the worker writes them to
``exemplars_<pid>.json`` in the metrics directory at most once a second (off the event loop),
and `collector` adds the newest of every worker's to the merged histograms at scrape time.
A scrape may show another worker's exemplar up to a second late; never one of a series that
is not there.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

__all__ = ["SharedExemplars"]

logger = logging.getLogger("gateway.metrics")

# A sample: its name (``..._bucket``) and its labels, sorted, ``le`` among them.
Key = tuple[str, tuple[tuple[str, str], ...]]
PATTERN = "exemplars_*.json"


class SharedExemplars:
    """The latest exemplar of each histogram bucket of this worker, shared through `directory`."""

    def __init__(self, directory: str, interval: float = 1.0) -> None:
        self.directory = directory
        self.interval = interval
        self.path = os.path.join(directory, f"exemplars_{os.getpid()}.json")
        self._latest: dict[Key, Exemplar] = {}
        self._scheduled = False

    def value_class(self) -> type:
        """prometheus-client's multiprocess value class, keeping exemplars here."""
        store = self
        base: Any = values.get_value_class()  # type: ignore[no-untyped-call]

        class ExemplarValue(base):  # type: ignore[misc]
            def __init__(
                self,
                typ: str,
                metric_name: str,
                name: str,
                labelnames: Iterable[str],
                labelvalues: Iterable[str],
                help_text: str,
                **kwargs: Any,
            ) -> None:
                labelnames, labelvalues = tuple(labelnames), tuple(labelvalues)
                super().__init__(
                    typ, metric_name, name, labelnames, labelvalues, help_text, **kwargs
                )
                self._exemplar_key: Key = (
                    name,
                    tuple(sorted(zip(labelnames, labelvalues, strict=True))),
                )

            def set_exemplar(self, exemplar: Exemplar) -> None:
                store.put(self._exemplar_key, exemplar)

            def get_exemplar(self) -> Exemplar | None:
                return store._latest.get(self._exemplar_key)

        return ExemplarValue

    def put(self, key: Key, exemplar: Exemplar) -> None:
        self._latest[key] = exemplar
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop: nothing would run a timer
            self.write()
            return
        self._scheduled = True
        loop.call_later(self.interval, self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        loop.run_in_executor(None, self.write, dict(self._latest))

    def write(self, latest: dict[Key, Exemplar] | None = None) -> None:
        """Replace this worker's file by `latest` (default: what it holds now)."""
        entries = [
            [name, list(labels), e.labels, e.value, e.timestamp]
            for (name, labels), e in (self._latest if latest is None else latest).items()
        ]
        partial = f"{self.path}.tmp"
        try:
            with open(partial, "w") as handle:
                json.dump(entries, handle)
            os.replace(partial, self.path)  # readers see the old file or the new, never half
        except OSError as exc:
            logger.warning("cannot share exemplars in %s: %s", self.directory, exc)

    def everyone(self) -> dict[Key, Exemplar]:
        """The newest exemplar of each bucket across the workers' files and this worker."""
        newest: dict[Key, Exemplar] = {}
        found = [
            ((name, tuple((k, v) for k, v in labels)), Exemplar(ex_labels, value, timestamp))
            for path in glob.glob(os.path.join(self.directory, PATTERN))
            for name, labels, ex_labels, value, timestamp in _entries(path)
        ]
        for key, exemplar in [*found, *self._latest.items()]:
            held = newest.get(key)
            if held is None or _time(held) <= _time(exemplar):
                newest[key] = exemplar
        return newest

    def collector(self, inner: Collector) -> Collector:
        """`inner` (the merged multiprocess metrics) with the workers' exemplars."""
        return _WithExemplars(inner, self)


class _WithExemplars(Collector):
    def __init__(self, inner: Collector, store: SharedExemplars) -> None:
        self.inner = inner
        self.store = store

    def collect(self) -> Iterator[Metric]:
        exemplars = self.store.everyone()
        for metric in self.inner.collect():
            if metric.type == "histogram" and exemplars:
                metric.samples = [
                    sample._replace(
                        exemplar=exemplars.get((sample.name, tuple(sorted(sample.labels.items()))))
                    )
                    for sample in metric.samples
                ]
            yield metric


def _entries(path: str) -> list[Any]:
    try:
        with open(path) as handle:
            entries: list[Any] = json.load(handle)
            return entries
    except (OSError, ValueError):  # a worker's file went away, or is not ours
        return []


def _time(exemplar: Exemplar) -> float:
    return float(exemplar.timestamp or 0.0)
