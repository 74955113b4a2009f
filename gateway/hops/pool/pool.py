"""`Pool`: the replicas behind one hop, kept fresh, balanced, ejected when sick.

A pool is used from one event loop (a gateway worker process has one); nothing in it
blocks or locks. Its parts: `EndpointSet` (names to endpoints), a `Balancer`, an
`OutlierDetector`, optionally a `HealthChecker`, the process's `RetryBudget`, and a
`PoolObserver` for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

from gateway.hops.pool.balancer import BALANCERS, balancer
from gateway.hops.pool.budget import RetryBudget
from gateway.hops.pool.call import PoolCall
from gateway.hops.pool.health import HealthChecker, HealthCheckPolicy
from gateway.hops.pool.observer import PoolObserver
from gateway.hops.pool.outcome import NoReplica, Outcome, PoolSaturated
from gateway.hops.pool.outlier import OutlierDetector, OutlierPolicy
from gateway.hops.pool.replica import Replica
from gateway.hops.pool.resolve import EndpointSet, Resolver
from gateway.hops.pool.target import Endpoint, PoolTarget

__all__ = ["Pool", "PoolSettings"]

logger = logging.getLogger("gateway.hops.pool")

C = TypeVar("C")


@dataclass(frozen=True)
class PoolSettings:
    """How a pool balances, ejects, checks and limits; one per hop, from the flags."""

    balancer: str = "least_request"
    choice_count: int = 2
    # Attempts in flight on the pool (in one process) past which it refuses at once
    # (Envoy's circuit breaker ``max_requests``); None: no limit.
    max_in_flight: int | None = None
    # The Retry-After of such a refusal, in seconds.
    saturated_retry_after: float = 1.0
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    # None: no active health checks (passive ejection only).
    health_check: HealthCheckPolicy | None = None
    refresh_interval: float = 5.0
    resolve_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.balancer not in BALANCERS:
            raise ValueError(f"the balancer must be one of {', '.join(BALANCERS)}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("max_in_flight must be 1 or more")


async def _keep_open(client: object) -> None:
    """The default `close_client`: a client that holds nothing to close."""


class Pool(Generic[C]):
    """Replicas of one upstream, each with a client of type `C` that `open_client` makes
    (on first use) and `close_client` closes (when the replica has left and its last
    attempt ended, or when the pool closes).

    `probe` tells whether a replica is ready: the active health checks use it, when the
    settings ask for them. `budget` is shared by every pool of the process.
    """

    def __init__(
        self,
        target: PoolTarget,
        *,
        open_client: Callable[[Endpoint], C],
        close_client: Callable[[C], Awaitable[None]] = _keep_open,
        settings: PoolSettings | None = None,
        budget: RetryBudget | None = None,
        probe: Callable[[Replica[C]], Awaitable[bool]] | None = None,
        observer: PoolObserver | None = None,
        resolver: Resolver | None = None,
        role: str = "upstream",
        clock: Callable[[], float] = time.monotonic,
        random: _random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings = settings or PoolSettings()
        if settings.health_check is not None and probe is None:
            raise ValueError("active health checks need a probe")
        self.role = role
        self.budget = budget
        self.clock = clock
        self.observer = observer or PoolObserver()
        self._open_client = open_client
        self._close_client = close_client
        rng = random or _random.Random()
        self.balancer = balancer(settings.balancer, rng, settings.choice_count)
        self.outliers = OutlierDetector(
            settings.outlier, clock=clock, random=rng, observer=self.observer, role=role
        )
        self.health: HealthChecker | None = None
        if settings.health_check is not None and probe is not None:
            self.health = HealthChecker(
                settings.health_check, probe, observer=self.observer, role=role, sleep=sleep
            )
        self.in_flight = 0
        self._replicas: dict[Endpoint, Replica[C]] = {}
        # The values of `_replicas`, kept as a tuple: read on every pick.
        self._members: tuple[Replica[C], ...] = ()
        self._retiring: set[Replica[C]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: asyncio.Future[None] | None = None
        # Whether replicas that join are probed at once (after the first round of checks).
        self._probing = False
        self.endpoints = EndpointSet(
            target,
            on_change=self.update,
            resolver=resolver,
            refresh_interval=settings.refresh_interval,
            resolve_timeout=settings.resolve_timeout,
            sleep=sleep,
            role=role,
        )
        self.update(self.endpoints.endpoints)

    @property
    def replicas(self) -> tuple[Replica[C], ...]:
        """The replicas in the pool now (not those that left and are finishing)."""
        return self._members

    # Lifecycle

    @property
    def started(self) -> bool:
        return self._starting is not None and self._starting.done()

    async def start(self) -> None:
        """Resolve the names, run a first round of health checks, then keep both going.
        Callers that come while it is starting wait for the same start."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        await self.endpoints.refresh()
        self.endpoints.start()
        if self.health is not None:
            await self.health.check(self.replicas)
            self._probing = True
            self._spawn(self.health.run(lambda: self.replicas))

    async def aclose(self) -> None:
        """Stop resolving and probing; close every client, those still retiring too."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        await self.endpoints.aclose()
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        replicas = [*self._replicas.values(), *self._retiring]
        self._replicas.clear()
        self._members = ()
        self._retiring.clear()
        for replica in replicas:
            if replica.opened:
                await self._close(replica)

    async def __aenter__(self) -> Pool[C]:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def update(self, endpoints: Sequence[Endpoint]) -> None:
        """Make the pool's replicas those of `endpoints`: new ones join, gone ones retire
        (their attempts in flight finish on them)."""
        wanted = set(endpoints)
        for endpoint, replica in list(self._replicas.items()):
            if endpoint not in wanted:
                del self._replicas[endpoint]
                replica.retired = True
                self._retiring.add(replica)
                if replica.outstanding == 0:
                    self._dispose(replica)
        added = []
        for endpoint in endpoints:
            if endpoint not in self._replicas:
                replica = Replica(endpoint, self._open_client)
                self._replicas[endpoint] = replica
                added.append(replica)
                self.observer.replica_added(replica)
        self._members = tuple(self._replicas.values())
        if added and self.health is not None and self._probing:
            # Probed now rather than at the next round: until then they are not picked.
            self._spawn(self.health.check(added))

    # Requests

    def call(self) -> PoolCall[C]:
        """A request through the pool (see `gateway.hops.pool.call`)."""
        return PoolCall(self)

    def saturated(self) -> bool:
        limit = self.settings.max_in_flight
        return limit is not None and self.in_flight >= limit

    def pick(self, exclude: Sequence[Replica[C]]) -> Replica[C]:
        """A replica for an attempt, counted as in flight until `finished`.

        Healthy replicas not in `exclude` first; then healthy ones; when none is healthy,
        any (Envoy's panic mode: better a replica that may fail than certain failure)."""
        if self.saturated():
            self.refused("concurrency")
            raise PoolSaturated(
                f"the {self.role} pool has {self.in_flight} requests in flight, its limit",
                upstream=self.role,
                retry_after=self.settings.saturated_retry_after,
            )
        replicas = self.replicas
        if not replicas:
            self.refused("no_replica")
            raise NoReplica(
                f"the {self.role} pool has no replica ({self.endpoints.target} resolved to "
                "no address yet)",
                upstream=self.role,
            )
        self.outliers.readmit_due(replicas)
        checked = self.health is not None
        candidates: Sequence[Replica[C]] = [
            replica
            for replica in replicas
            if replica.outlier.ejected_until is None
            and (not checked or replica.health.healthy is True)
        ] or replicas
        if exclude:
            candidates = [replica for replica in candidates if replica not in exclude] or candidates
        replica = self.balancer.choose(candidates)
        replica.outstanding += 1
        replica.attempts += 1
        self.in_flight += 1
        return replica

    def finished(self, replica: Replica[C], outcome: Outcome, seconds: float) -> None:
        """An attempt `pick` counted has ended with `outcome`."""
        replica.outstanding -= 1
        self.in_flight -= 1
        if outcome.is_failure:
            replica.failures += 1
        self.observer.attempt_finished(replica, outcome, seconds)
        if not replica.retired:
            self.outliers.record(replica, outcome, self.replicas)
        elif replica.outstanding == 0 and replica in self._retiring:
            self._dispose(replica)

    def refused(self, reason: str) -> None:
        self.observer.refused(reason)

    # Readiness

    def healthy(self) -> bool:
        """Whether any replica is in the pool and neither ejected nor failing its checks."""
        if self.replicas:
            self.outliers.readmit_due(self.replicas)
        return any(self._available(replica) for replica in self.replicas)

    async def ready(
        self, check: Callable[[Replica[C]], Awaitable[bool]] | None = None, timeout: float = 5.0
    ) -> bool:
        """Whether at least one replica is ready: `check` asked of the available replicas
        (of all, if none is) at once, each within `timeout`; without `check`, `healthy`."""
        if check is None:
            return self.healthy()
        replicas = [r for r in self.replicas if self._available(r)] or list(self.replicas)

        async def one(replica: Replica[C]) -> bool:
            try:
                return bool(await asyncio.wait_for(check(replica), timeout))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a probe reports, it does not raise
                logger.debug("%s replica %s: not ready: %r", self.role, replica.endpoint, exc)
                return False

        tasks = [asyncio.ensure_future(one(replica)) for replica in replicas]
        try:
            for next_done in asyncio.as_completed(tasks):
                if await next_done:
                    return True
            return False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # Internals

    def _available(self, replica: Replica[C]) -> bool:
        if replica.ejected:
            return False
        return self.health is None or replica.health.healthy is True

    def _dispose(self, replica: Replica[C]) -> None:
        self._retiring.discard(replica)
        self.observer.replica_removed(replica)
        if replica.opened:
            self._spawn(self._close(replica))

    async def _close(self, replica: Replica[C]) -> None:
        try:
            await self._close_client(replica.client)
        except Exception as exc:  # closing is tidying up: it must not fail the pool
            logger.warning(
                "%s replica %s: closing its client failed: %r", self.role, replica.endpoint, exc
            )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
