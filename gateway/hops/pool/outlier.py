"""Passive outlier ejection, as Envoy's ``consecutive_gateway_failure`` detector does it.

- A replica whose attempts end in `consecutive_failures` gateway or connect failures in a
  row is ejected: not picked while any replica that is not ejected is left.
- The ejection lasts ``base_ejection_time x multiplier`` (capped at `max_ejection_time`),
  plus up to `max_jitter`. The multiplier grows by one with each ejection and shrinks by
  one for each `interval` the replica then stays in the pool, so a replica that keeps
  failing stays out longer, and one that recovered is forgiven in time.
- An ejection happens only if the ejected share of the pool stays within
  `max_ejection_percent` (Envoy: ``100 x (ejected + 1) / replicas <= max``), or, with
  `always_eject_one` (Envoy's ``always_eject_one_host``), when nothing is ejected yet.
  Envoy leaves that off by default; here it is on, because pools of 2 to 9 replicas are the
  usual case, and 10% of them rounds down to none.
- The replica comes back by itself when its time is up (checked when the pool next picks,
  rather than on Envoy's 10 s sweep), with its count of failures cleared.
- The log says each ejection and each return once (the failures of attempts still in flight
  on an ejected replica count for nothing), and an ejection held back by the share once per
  run of failures; `PoolObserver.ejected` (the metric, a span event) is told each ejection.
"""

from __future__ import annotations

import logging
import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.hops.pool.observer import PoolObserver
from gateway.hops.pool.outcome import Outcome
from gateway.hops.pool.replica import Replica

__all__ = ["OutlierDetector", "OutlierPolicy"]

logger = logging.getLogger("gateway.hops.pool")


@dataclass(frozen=True)
class OutlierPolicy:
    """Envoy's defaults, except `always_eject_one` (see the module's docstring)."""

    # 0 turns passive ejection off.
    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    always_eject_one: bool = True
    # How long a readmitted replica must stay in for its multiplier to drop by one.
    interval: float = 10.0
    max_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0:
            raise ValueError("consecutive_failures must be 0 (off) or more")
        if self.base_ejection_time <= 0 or self.interval <= 0:
            raise ValueError("base_ejection_time and interval must be more than 0")
        if self.max_ejection_time < self.base_ejection_time:
            raise ValueError("max_ejection_time cannot be less than base_ejection_time")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be from 0 to 100")
        if self.max_jitter < 0:
            raise ValueError("max_jitter cannot be negative")


class OutlierDetector:
    """Applies an `OutlierPolicy` to the replicas of one pool."""

    def __init__(
        self,
        policy: OutlierPolicy,
        *,
        clock: Callable[[], float],
        random: _random.Random,
        observer: PoolObserver,
        role: str = "upstream",
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.random = random
        self.observer = observer
        self.role = role

    def record(self, replica: Replica[Any], outcome: Outcome, pool: Sequence[Replica[Any]]) -> None:
        """Count `outcome` of an attempt on `replica`, one of `pool`; eject it if it is due."""
        state = replica.outlier
        if outcome.is_answer:
            state.consecutive = 0
            state.held_back = False
            return
        if not outcome.is_failure or replica.ejected:
            # Failures of attempts sent before the ejection say nothing new.
            return
        state.consecutive += 1
        threshold = self.policy.consecutive_failures
        if threshold and state.consecutive >= threshold:
            # Cleared whether or not the ejection is allowed, as Envoy does: the next try
            # takes another run of failures.
            state.consecutive = 0
            self._eject(replica, pool)

    def readmit_due(self, pool: Sequence[Replica[Any]]) -> None:
        """Bring back the replicas whose ejection has ended."""
        now = self.clock()
        for replica in pool:
            state = replica.outlier
            if state.ejected_until is not None and now >= state.ejected_until:
                state.readmitted_at = state.ejected_until
                state.ejected_until = None
                state.consecutive = 0
                logger.info("%s replica %s readmitted", self.role, replica.endpoint)
                self.observer.readmitted(replica)

    def _eject(self, replica: Replica[Any], pool: Sequence[Replica[Any]]) -> None:
        policy = self.policy
        ejected = sum(1 for other in pool if other.ejected)
        allowed = 100.0 * (ejected + 1) / len(pool) <= policy.max_ejection_percent
        state = replica.outlier
        if not (allowed or (policy.always_eject_one and ejected == 0)):
            # Under load a failing replica comes here every few requests: said once, until
            # it answers or is ejected.
            if not state.held_back:
                state.held_back = True
                logger.warning(
                    "%s replica %s is failing, but %d of %d replicas are ejected already",
                    self.role,
                    replica.endpoint,
                    ejected,
                    len(pool),
                )
            return
        state.held_back = False
        now = self.clock()
        if state.readmitted_at is not None:
            # Envoy lowers the multiplier once per interval the replica stayed healthy.
            forgiven = int((now - state.readmitted_at) // policy.interval)
            state.multiplier = max(0, state.multiplier - forgiven)
        base, cap = policy.base_ejection_time, policy.max_ejection_time
        if state.multiplier * base < cap + base:
            state.multiplier += 1
        seconds = min(base * state.multiplier, cap) + self.random.uniform(0, policy.max_jitter)
        state.ejected_until = now + seconds
        state.ejections += 1
        logger.warning(
            "%s replica %s ejected for %.1f s (ejection %d)",
            self.role,
            replica.endpoint,
            seconds,
            state.ejections,
        )
        self.observer.ejected(replica, seconds)
