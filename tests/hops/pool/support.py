"""What the pool tests share: a clock and a sleep the test moves by hand, an observer that
writes down what it hears, and a pool of plain endpoints."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.hops.pool import Outcome, Pool, PoolObserver, PoolSettings, Replica, parse_target
from gateway.hops.pool.resolve import Resolver
from gateway.hops.pool.target import Endpoint


class Clock:
    """Monotonic time that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ticker:
    """A sleep that returns only when the test says `tick`, so a loop runs one round per tick
    and the test knows when that round is done (the loop is asleep again)."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._wake = asyncio.Event()
        self._asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        self._asleep.set()
        await self._wake.wait()
        self._wake.clear()

    async def asleep(self) -> None:
        """Wait (bounded) until the loop sleeps."""
        await asyncio.wait_for(self._asleep.wait(), 5)

    async def tick(self) -> None:
        """Wake the loop and wait until it has gone round and sleeps again."""
        await self.asleep()
        self._asleep.clear()
        self._wake.set()
        await self.asleep()


class Recorder(PoolObserver):
    """Writes down every callback as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def attempt_finished(self, replica: Replica[Any], outcome: Outcome, seconds: float) -> None:
        self.events.append(("attempt", str(replica.endpoint), outcome, seconds))

    def ejected(self, replica: Replica[Any], seconds: float) -> None:
        self.events.append(("ejected", str(replica.endpoint), seconds))

    def readmitted(self, replica: Replica[Any]) -> None:
        self.events.append(("readmitted", str(replica.endpoint)))

    def health_changed(self, replica: Replica[Any], healthy: bool) -> None:
        self.events.append(("health", str(replica.endpoint), healthy))

    def refused(self, reason: str) -> None:
        self.events.append(("refused", reason))

    def replica_added(self, replica: Replica[Any]) -> None:
        self.events.append(("added", str(replica.endpoint)))

    def replica_removed(self, replica: Replica[Any]) -> None:
        self.events.append(("removed", str(replica.endpoint)))

    def named(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]


def endpoint_pool(
    target: str,
    *,
    settings: PoolSettings | None = None,
    clock: Clock | None = None,
    seed: int = 7,
    resolver: Resolver | None = None,
    observer: PoolObserver | None = None,
    probe: Callable[[Replica[Endpoint]], Awaitable[bool]] | None = None,
    **kwargs: Any,
) -> Pool[Endpoint]:
    """A pool of `target` whose client is the endpoint itself."""
    return Pool(
        parse_target(target, default_port=80),
        open_client=lambda endpoint: endpoint,
        settings=settings,
        clock=clock or Clock(),
        random=random.Random(seed),
        resolver=resolver,
        observer=observer,
        probe=probe,
        **kwargs,
    )


def by_port(pool: Pool[Any]) -> dict[int, Replica[Any]]:
    return {replica.endpoint.port: replica for replica in pool.replicas}
