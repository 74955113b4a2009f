"""`PoolObserver`: what a pool reports as it works, for metrics (`gateway.hops.pool.metrics`)
and, in the wiring, span events. The base class does nothing; override what you need."""

from __future__ import annotations

from typing import Any

from gateway.hops.pool.outcome import Outcome
from gateway.hops.pool.replica import Replica

__all__ = ["REFUSALS", "PoolObserver"]

#: Why a pool refused an attempt before sending it.
REFUSALS = ("retry_budget", "concurrency", "no_replica")


class PoolObserver:
    def attempt_finished(self, replica: Replica[Any], outcome: Outcome, seconds: float) -> None:
        """An attempt on `replica` ended with `outcome` after `seconds`."""

    def ejected(self, replica: Replica[Any], seconds: float) -> None:
        """`replica` is out of the pool for `seconds`."""

    def readmitted(self, replica: Replica[Any]) -> None:
        """`replica`'s ejection ended."""

    def health_changed(self, replica: Replica[Any], healthy: bool) -> None:
        """The active health checks turned `replica` healthy or unhealthy."""

    def refused(self, reason: str) -> None:
        """An attempt was refused before a replica was chosen (one of `REFUSALS`)."""

    def replica_added(self, replica: Replica[Any]) -> None:
        """`replica` appeared in the endpoints."""

    def replica_removed(self, replica: Replica[Any]) -> None:
        """`replica` left the endpoints and its last attempt finished."""
