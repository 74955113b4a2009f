"""Pools against real HTTP replicas on loopback (127.0.0.1-3, one port): shares, a slow
replica, a killed one, a flapping one, a DNS change, a total outage, a full pool, probes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import UpstreamStatusError
from gateway.hops.pool import (
    Endpoint,
    HealthCheckPolicy,
    OutlierPolicy,
    Pool,
    PoolSaturated,
    PoolSettings,
    RetryBudget,
    StaticResolver,
    parse_target,
)

from .replicas import Client, FakeReplica, replicas, target
from .support import Clock


class PeakBudget(RetryBudget):
    """Notes the most retries it ever had in flight."""

    peak = 0

    def try_retry(self) -> bool:
        allowed = super().try_retry()
        self.peak = max(self.peak, self.retries)
        return allowed


def make_pool(text: str, **kwargs: Any) -> Pool[Endpoint]:
    kwargs.setdefault("random", random.Random(11))
    return Pool(parse_target(text, default_port=80), open_client=lambda e: e, **kwargs)


@pytest.fixture
async def three() -> AsyncIterator[tuple[int, list[FakeReplica]]]:
    async with replicas(3) as started:
        yield started


async def send(client: Client, count: int, concurrency: int) -> list[str | BaseException]:
    """`count` requests, `concurrency` at a time; each one's answer or error."""
    limit = asyncio.Semaphore(concurrency)

    async def one() -> str | BaseException:
        async with limit:
            try:
                return await client.infer()
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_equal_replicas_get_equal_shares(three: tuple[int, list[FakeReplica]]) -> None:
    port, fakes = three
    pool = make_pool(target(port, fakes))
    client = Client(pool)
    answers = await send(client, 300, concurrency=8)
    await client.aclose()
    shares = Counter(answers)
    print("equal shares", shares)
    assert sum(shares.values()) == 300
    assert set(shares) == {f.host for f in fakes}
    assert all(60 <= shares[f.host] <= 140 for f in fakes), shares


async def test_a_slow_replica_gets_fewer_requests(three: tuple[int, list[FakeReplica]]) -> None:
    port, fakes = three
    fakes[2].delay = 0.1
    pool = make_pool(target(port, fakes))
    client = Client(pool)
    answers = await send(client, 150, concurrency=6)
    await client.aclose()
    shares = Counter(answers)
    print("slow shares", shares)
    assert sum(shares.values()) == 150
    # Two random choices: the slow one wins only against a pair it is not in... rarely.
    assert shares[fakes[2].host] < 150 // 6, shares


async def test_a_killed_replica_is_ejected_and_its_requests_retried_elsewhere(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    pool = make_pool(target(port, fakes))
    client = Client(pool, retries=2)
    await fakes[1].stop()
    answers = await send(client, 120, concurrency=4)
    await client.aclose()
    assert Counter(type(a).__name__ for a in answers) == Counter({"str": 120})
    dead = next(r for r in pool.replicas if r.endpoint.address == fakes[1].host)
    assert dead.ejected
    assert dead.outlier.ejections == 1
    # Five connect failures eject it; attempts picked before that may add a few.
    assert dead.attempts <= pool.settings.outlier.consecutive_failures + 4
    assert fakes[0].requests + fakes[2].requests == 120


async def test_a_flapping_replica_is_ejected_then_readmitted(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    clock = Clock()
    pool = make_pool(
        target(port, fakes),
        clock=clock,
        settings=PoolSettings(outlier=OutlierPolicy(consecutive_failures=3, base_ejection_time=30)),
    )
    client = Client(pool, retries=2)
    fakes[0].status = 503
    assert all(isinstance(a, str) for a in await send(client, 60, concurrency=3))
    flapping = next(r for r in pool.replicas if r.endpoint.address == fakes[0].host)
    assert flapping.ejected
    before = fakes[0].requests
    await send(client, 30, concurrency=3)
    assert fakes[0].requests == before  # out of the pool

    fakes[0].status = 200
    clock.advance(30)
    answers = await send(client, 60, concurrency=3)
    await client.aclose()
    assert not flapping.ejected
    assert fakes[0].host in answers


async def test_a_dns_change_is_picked_up_and_requests_in_flight_finish(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    resolver = StaticResolver({"predictor.test": [fakes[0].host, fakes[1].host]})
    pool = make_pool(f"predictor.test:{port}", resolver=resolver)
    await pool.start()
    client = Client(pool)
    assert set(await send(client, 30, concurrency=3)) == {fakes[0].host, fakes[1].host}

    # A request held on replica 1 while the name moves to replicas 2 and 3.
    fakes[0].gate = asyncio.Event()
    fakes[0].arrived.clear()
    held = asyncio.ensure_future(client.post(pool.replicas[0].endpoint, 1))
    await asyncio.wait_for(fakes[0].arrived.wait(), 5)
    resolver.set("predictor.test", [fakes[1].host, fakes[2].host])
    await pool.endpoints.refresh()
    assert set(await send(client, 30, concurrency=3)) == {fakes[1].host, fakes[2].host}
    fakes[0].gate.set()
    assert await asyncio.wait_for(held, 5) == fakes[0].host
    await client.aclose()
    await pool.aclose()


async def test_in_a_total_outage_retries_in_flight_stay_within_the_budget(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    budget = PeakBudget(percent=20, min_concurrency=3)
    pool = make_pool(
        target(port, fakes),
        budget=budget,
        settings=PoolSettings(outlier=OutlierPolicy(consecutive_failures=0)),
    )
    client = Client(pool, retries=3)
    for fake in fakes:
        fake.status, fake.delay = 503, 0.02
    answers = await send(client, 60, concurrency=60)
    await client.aclose()
    assert all(isinstance(a, UpstreamStatusError) and a.status == 503 for a in answers)
    first = sum(fake.by_attempt[1] for fake in fakes)
    retries = sum(fake.requests for fake in fakes) - first
    assert first == 60
    assert retries > 0
    # At most 20% of the 60 requests in flight (12) retried at once, never more.
    assert budget.peak <= 12
    print(f"outage: 60 requests, {retries} retries at the replicas, peak {budget.peak}")
    assert budget.requests == 0
    assert budget.retries == 0


async def test_a_full_pool_refuses_at_once(three: tuple[int, list[FakeReplica]]) -> None:
    port, fakes = three
    pool = make_pool(target(port, fakes), settings=PoolSettings(max_in_flight=4))
    client = Client(pool)
    arrivals: asyncio.Queue[str] = asyncio.Queue()
    for fake in fakes:
        fake.gate, fake.arrivals = asyncio.Event(), arrivals
    held = [asyncio.ensure_future(client.infer()) for _ in range(4)]
    for _ in range(4):
        await asyncio.wait_for(arrivals.get(), 5)
    with pytest.raises(PoolSaturated) as refused:
        await client.infer()
    assert refused.value.retry_after == 1.0
    assert sum(fake.requests for fake in fakes) == 4
    for fake in fakes:
        assert fake.gate is not None
        fake.gate.set()
    assert len(set(await asyncio.gather(*held))) >= 1
    await client.infer()
    await client.aclose()


async def test_health_checks_against_the_ready_endpoint(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    holder: list[Client] = []

    async def probe(replica: Any) -> bool:
        return await holder[0].ready(replica)

    pool = make_pool(
        target(port, fakes),
        settings=PoolSettings(health_check=HealthCheckPolicy(interval=60, unhealthy_threshold=1)),
        probe=probe,
    )
    client = Client(pool)
    holder.append(client)
    fakes[1].ready = False
    await pool.start()
    answers = set(await send(client, 40, concurrency=4))
    assert answers == {fakes[0].host, fakes[2].host}
    assert await pool.ready()
    fakes[0].ready = fakes[2].ready = False
    assert pool.health is not None
    await pool.health.check(pool.replicas)
    assert not await pool.ready()
    assert not await pool.ready(client.ready)
    await pool.aclose()
    await client.aclose()
