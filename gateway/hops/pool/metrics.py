"""Prometheus metrics of the pools: attempts, latency and ejections per replica, refusals
per pool. Registered on the gateway's registry (``Metrics.registry``), so ``/metrics``
shows them with the rest; labelled like ``gateway_hop_seconds`` (model, hop).

A replica that leaves the endpoints takes its series with it once its last attempt ends,
so that a pool whose pods come and go does not grow its label sets without end.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.hops.pool.observer import PoolObserver
from gateway.hops.pool.outcome import Outcome
from gateway.hops.pool.replica import Replica
from gateway.metrics import LATENCY_BUCKETS as BUCKETS
from gateway.metrics import registered_once
from gateway.metrics_tally import Tally, tallies

__all__ = ["PoolMetrics", "pool_metrics"]


def pool_metrics(registry: CollectorRegistry) -> PoolMetrics:
    """The pool metrics of `registry`, registered on it once (a server's hops share them)."""
    return registered_once(PoolMetrics, registry)


class PoolMetrics:
    """The pool metrics of one registry; `observer` gives each pool its own view."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Attempts are tallied (see gateway.metrics_tally): its collector comes first.
        self.tallies = tallies(registry)
        self.attempts = Counter(
            "gateway_replica_attempts",
            "Attempts sent to each replica of a pool, by outcome",
            ["model_name", "hop", "replica", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "gateway_replica_seconds",
            "Time of each attempt on a replica",
            ["model_name", "hop", "replica"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.ejections = Counter(
            "gateway_replica_ejections",
            "Times a replica was ejected from its pool for failing",
            ["model_name", "hop", "replica"],
            registry=registry,
        )
        self.refusals = Counter(
            "gateway_pool_refusals",
            "Attempts a pool refused before sending: retry budget, concurrency, no replica",
            ["model_name", "hop", "reason"],
            registry=registry,
        )

    def observer(self, model_name: str, hop: str) -> PoolObserver:
        """The observer for the pool of `model_name`'s `hop`."""
        return _Observer(self, model_name, hop)


class _Observer(PoolObserver):
    def __init__(self, metrics: PoolMetrics, model_name: str, hop: str) -> None:
        self.metrics = metrics
        self.labels = (model_name, hop)
        # labels() locks and hashes on each call: each series is looked up once.
        self._attempts: dict[tuple[str, Outcome], Tally] = {}
        self._seconds: dict[str, Tally] = {}

    def attempt_finished(self, replica: Replica[Any], outcome: Outcome, seconds: float) -> None:
        name = replica.endpoint.hostport
        key = (name, outcome)
        counter = self._attempts.get(key)
        metrics = self.metrics
        if counter is None:
            counter = self._attempts[key] = metrics.tallies.of(
                metrics.attempts.labels(*self.labels, name, outcome.value)
            )
        counter.inc()
        histogram = self._seconds.get(name)
        if histogram is None:
            histogram = self._seconds[name] = metrics.tallies.of(
                metrics.seconds.labels(*self.labels, name)
            )
        histogram.observe(seconds)

    def ejected(self, replica: Replica[Any], seconds: float) -> None:
        self.metrics.ejections.labels(*self.labels, replica.endpoint.hostport).inc()

    def refused(self, reason: str) -> None:
        self.metrics.refusals.labels(*self.labels, reason).inc()

    def replica_removed(self, replica: Replica[Any]) -> None:
        name = replica.endpoint.hostport
        for key in [key for key in self._attempts if key[0] == name]:
            del self._attempts[key]
        self._seconds.pop(name, None)
        series: list[tuple[Any, tuple[str, ...]]] = [
            (self.metrics.seconds, ()),
            (self.metrics.ejections, ()),
            *((self.metrics.attempts, (outcome.value,)) for outcome in Outcome),
        ]
        self.metrics.tallies.flush()  # what is pending for the series, before they go
        for metric, extra in series:
            # remove() raises KeyError for a series that never had a value.
            with contextlib.suppress(KeyError):
                metric.remove(*self.labels, name, *extra)
