"""`Replica`: one endpoint of a pool, its client, and what the pool knows about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.hops.pool.target import Endpoint

__all__ = ["HealthState", "OutlierState", "Replica"]

C = TypeVar("C")


@dataclass
class OutlierState:
    """Passive health: consecutive failures, and the ejection they led to."""

    consecutive: int = 0
    # Monotonic time the current ejection ends; None while the replica is in the pool.
    ejected_until: float | None = None
    # Envoy's ejection time backoff: the next ejection lasts base x this (after +1).
    multiplier: int = 0
    ejections: int = 0
    readmitted_at: float | None = None
    # An ejection was due but the pool's share was used up; logged once until it answers.
    held_back: bool = False


@dataclass
class HealthState:
    """Active health: the last verdict of the probes and how many in a row gave it."""

    # None until the first probe answers (a replica is then not picked: Envoy's way).
    healthy: bool | None = None
    # Probes in a row that disagree with `healthy`.
    streak: int = 0
    passed_once: bool = False


class Replica(Generic[C]):
    """An endpoint and its client (opened on first use), with the counts the balancer, the
    outlier detector and the health checker keep."""

    def __init__(self, endpoint: Endpoint, open_client: Callable[[Endpoint], C]) -> None:
        self.endpoint = endpoint
        # Attempts in flight: what least-request balancing compares.
        self.outstanding = 0
        self.attempts = 0
        # Attempts whose outcome counts against the replica.
        self.failures = 0
        self.outlier = OutlierState()
        self.health = HealthState()
        # Gone from the endpoints; its attempts in flight finish, then its client closes.
        self.retired = False
        self._open = open_client
        self._client: C | None = None
        self._opened = False

    @property
    def client(self) -> C:
        if not self._opened:
            self._client = self._open(self.endpoint)
            self._opened = True
        return self._client  # type: ignore[return-value]  # set just above

    @property
    def opened(self) -> bool:
        return self._opened

    @property
    def ejected(self) -> bool:
        return self.outlier.ejected_until is not None

    def __repr__(self) -> str:
        return f"<Replica {self.endpoint} outstanding={self.outstanding}>"
