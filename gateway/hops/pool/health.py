"""Active health checks: every `interval`, probe each replica (the wiring's probe asks the
replica's ``/v2/health/ready``, or gRPC ``ServerReady``); `unhealthy_threshold` failed
probes in a row take it out, `healthy_threshold` good ones bring it back.

As in Envoy, a replica is not picked until its first probe passes (one is enough then), and
a probe that does not answer within `timeout` has failed. Kubernetes' probe defaults set
the numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.hops.pool.observer import PoolObserver
from gateway.hops.pool.replica import Replica

__all__ = ["HealthCheckPolicy", "HealthChecker", "Probe"]

logger = logging.getLogger("gateway.hops.pool")

Probe = Callable[[Replica[Any]], Awaitable[bool]]


@dataclass(frozen=True)
class HealthCheckPolicy:
    interval: float = 10.0
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("health check interval and timeout must be more than 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be 1 or more")


class HealthChecker:
    """Probes the replicas of one pool, a round at a time."""

    def __init__(
        self,
        policy: HealthCheckPolicy,
        probe: Probe,
        *,
        observer: PoolObserver,
        role: str = "upstream",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.probe = probe
        self.observer = observer
        self.role = role
        self.sleep = sleep

    async def check(self, replicas: Sequence[Replica[Any]]) -> None:
        """One round: every replica probed at once, each within the timeout."""
        results = await asyncio.gather(*(self._probe(replica) for replica in replicas))
        for replica, passed in zip(replicas, results, strict=True):
            self._count(replica, passed)

    async def run(self, replicas: Callable[[], Sequence[Replica[Any]]]) -> None:
        """Rounds every `interval` until cancelled, on the replicas of the moment."""
        while True:
            await self.sleep(self.policy.interval)
            await self.check(replicas())

    async def _probe(self, replica: Replica[Any]) -> bool:
        try:
            return bool(await asyncio.wait_for(self.probe(replica), self.policy.timeout))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe reports, it does not raise
            logger.debug("%s replica %s: health probe failed: %r", self.role, replica.endpoint, exc)
            return False

    def _count(self, replica: Replica[Any], passed: bool) -> None:
        state = replica.health
        if state.healthy is None:
            # The first verdict stands at once.
            state.healthy, state.streak, state.passed_once = passed, 0, passed
            self._changed(replica, passed)
            return
        if passed == state.healthy:
            state.streak = 0
            return
        state.streak += 1
        needed = self.policy.healthy_threshold if passed else self.policy.unhealthy_threshold
        if passed and not state.passed_once:
            # A replica that never passed needs one good probe to start (Envoy's rule).
            needed = 1
            state.passed_once = True
        if state.streak >= needed:
            state.healthy, state.streak = passed, 0
            self._changed(replica, passed)

    def _changed(self, replica: Replica[Any], healthy: bool) -> None:
        if healthy:
            logger.info("%s replica %s is healthy", self.role, replica.endpoint)
        else:
            logger.warning("%s replica %s failed its health checks", self.role, replica.endpoint)
        self.observer.health_changed(replica, healthy)
