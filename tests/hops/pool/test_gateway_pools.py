"""Pools through the whole gateway (a ModelServer in this process, configured by the flags
as ``gateway serve`` is) in front of real REST replicas on 127.0.0.1-3 (one port): shares, a
replica killed under load, a slow one, a flapping one, each attempt's span naming its
replica in /traces, a DNS change, a total outage within the retry budget, the concurrency
limit, and shadow traffic. The same behind a gRPC hop: test_gateway_grpc_pools.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from gateway.hops.pool import StaticResolver

from .replicas import FakeReplica, replicas, shared_port, target
from .through import (
    TRACED_ROUND_ROBIN,
    check_attempts_name_their_replicas,
    gateway,
    infer,
    metrics,
    send,
    traced_requests,
)


@pytest.fixture
async def three() -> AsyncIterator[tuple[int, list[FakeReplica]]]:
    async with replicas(3) as started:
        yield started


async def test_equal_replicas_get_equal_shares(three: tuple[int, list[FakeReplica]]) -> None:
    port, fakes = three
    async with gateway("--predictor_host", target(port, fakes)) as base:
        answers = await send(base, 240, concurrency=8)
        text = await metrics(base)
    shares = Counter(answer.replica for answer in answers)
    assert all(answer.status == 200 for answer in answers)
    assert set(shares) == {fake.host for fake in fakes}
    assert all(40 <= shares[fake.host] <= 120 for fake in fakes), shares
    assert [fake.requests for fake in fakes] == [shares[fake.host] for fake in fakes]
    # Per replica metrics, named by address.
    for fake in fakes:
        assert f'replica="{fake.host}:{port}"' in text


async def test_a_killed_replica_costs_at_most_its_requests_in_flight(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    for fake in fakes:
        fake.delay = 0.005
    victim = fakes[0]
    flags = ("--predictor_host", target(port, fakes), "--predictor_request_retries", "2")
    async with gateway(*flags) as base:
        load = asyncio.ensure_future(send(base, 300, concurrency=6))
        await asyncio.wait_for(victim.arrived.wait(), 10)
        in_flight = victim.in_flight
        await victim.stop()
        served_by_victim = victim.requests
        answers = await asyncio.wait_for(load, 60)
    failed = [answer for answer in answers if answer.status != 200]
    # Connections refused after the kill are retried on the others; only what was on the
    # victim (at most one request per client connection) can have failed.
    assert len(failed) <= max(in_flight, 6), [(a.status, a.body) for a in failed]
    assert victim.requests == served_by_victim, "nothing reached it after it stopped"
    shares = Counter(answer.replica for answer in answers)
    assert shares[fakes[1].host] + shares[fakes[2].host] >= 300 - served_by_victim - len(failed)


async def test_a_slow_replica_gets_fewer_requests(three: tuple[int, list[FakeReplica]]) -> None:
    port, fakes = three
    slow = fakes[0]
    slow.delay = 0.05
    async with gateway("--predictor_host", target(port, fakes)) as base:
        answers = await send(base, 150, concurrency=8)
    assert all(answer.status == 200 for answer in answers)
    assert slow.requests < min(fakes[1].requests, fakes[2].requests) / 2, [
        fake.requests for fake in fakes
    ]


async def test_a_flapping_replica_is_ejected_and_readmitted(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    flapping = fakes[0]
    flapping.status = 503
    flags = (
        "--predictor_host", target(port, fakes), "--predictor_request_retries", "2",
        "--outlier_consecutive_failures", "2", "--outlier_base_ejection_seconds", "0.2",
    )  # fmt: skip
    ejections = (
        'gateway_replica_ejections_total{hop="predictor",model_name="m",'
        f'replica="{flapping.host}:{port}"}} 1.0'
    )
    async with gateway(*flags) as base, aiohttp.ClientSession() as session:
        # Sick: its 503s are retried on the others, until it is ejected.
        for _ in range(100):
            assert (await infer(session, base)).status == 200
            if ejections in await metrics(base):
                break
        else:
            raise AssertionError("the replica was never ejected")
        assert flapping.requests >= 2
        flapping.status = 200
        before = flapping.requests
        # Well again: back in the pool once its ejection ends (bounded wait).
        for _ in range(500):
            answer = await infer(session, base)
            assert answer.status == 200
            if answer.replica == flapping.host:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the replica never came back")
    assert flapping.requests > before


async def test_each_attempts_client_span_names_its_replica_in_traces(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    await fakes[1].stop()
    pool = target(port, fakes)
    async with gateway("--predictor_host", pool, *TRACED_ROUND_ROBIN) as base:
        answers, attempts, page = await traced_requests(base, 6)
    check_attempts_name_their_replicas(pool.split(","), answers, attempts, page)


async def test_a_dns_change_is_picked_up_without_a_restart(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, _ = three
    resolver = StaticResolver({"pods.test": ["127.0.0.1"]})
    flags = ("--predictor_host", f"pods.test:{port}", "--dns_refresh_seconds", "0.05")
    async with gateway(*flags, resolver=resolver) as base:
        first = await send(base, 20, concurrency=4)
        assert {answer.replica for answer in first} == {"127.0.0.1"}
        resolver.set("pods.test", ["127.0.0.2", "127.0.0.3"])
        async with aiohttp.ClientSession() as session:
            for _ in range(500):
                if (await infer(session, base)).replica != "127.0.0.1":
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the new addresses were never used")
        after = await send(base, 40, concurrency=4)
    assert {answer.replica for answer in after} == {"127.0.0.2", "127.0.0.3"}


class Outage(FakeReplica):
    """A replica that is down (503), and notes, with the others sharing `seen`, the retries
    in flight at once: a request id seen before is a retry."""

    seen: set[str]
    retries: list[int]

    async def _infer(self, request: web.Request) -> web.Response:
        rid = request.headers.get("x-request-id", "")
        retry = rid in self.seen
        self.seen.add(rid)
        self.retries[0] += retry
        self.retries[1] = max(self.retries[1], self.retries[0])
        try:
            return await super()._infer(request)
        finally:
            self.retries[0] -= retry


@asynccontextmanager
async def outage(count: int) -> AsyncIterator[tuple[int, list[FakeReplica]]]:
    hosts = [f"127.0.0.{n + 1}" for n in range(count)]
    port = shared_port(hosts)
    seen: set[str] = set()
    retries = [0, 0]  # in flight now, most at once
    fakes: list[FakeReplica] = []
    for host in hosts:
        fake = Outage(host)
        fake.seen, fake.retries = seen, retries
        fake.status, fake.delay = 503, 0.01
        await fake.start(port)
        fakes.append(fake)
    try:
        yield port, fakes
    finally:
        for fake in fakes:
            await fake.stop()


@pytest.mark.parametrize("budget", [20, 100])
async def test_a_total_outage_costs_at_most_the_retry_budget(budget: int) -> None:
    requests, concurrency, retries = 60, 10, 3
    async with outage(3) as (port, fakes):
        flags = (
            "--predictor_host", target(port, fakes),
            "--predictor_request_retries", str(retries), "--retry_backoff_initial", "0.001",
            "--retry_budget_percent", str(budget), "--min_retry_concurrency", "0",
            "--outlier_consecutive_failures", "0",
        )  # fmt: skip
        async with gateway(*flags) as base:
            answers = await send(base, requests, concurrency)
        peak = fakes[0].retries[1]  # type: ignore[attr-defined]
    received = sum(fake.requests for fake in fakes)
    print(f"outage, budget {budget}%: {received} requests upstream for {requests}, peak {peak}")
    assert all(answer.status == 503 for answer in answers)
    if budget == 20:
        # At most 20% of the requests in flight (10) are retries at any time.
        assert peak <= concurrency * budget // 100
        assert received < requests * (retries + 1)
    else:
        assert received == requests * (retries + 1), "without a cap, every retry goes out"


async def test_a_full_pool_answers_503_with_retry_after_at_once(
    three: tuple[int, list[FakeReplica]],
) -> None:
    port, fakes = three
    gate = asyncio.Event()
    for fake in fakes:
        fake.gate = gate
    flags = ("--predictor_host", target(port, fakes), "--pool_max_in_flight", "2")
    async with gateway(*flags) as base, aiohttp.ClientSession() as session:
        held = [asyncio.ensure_future(infer(session, base)) for _ in range(2)]
        for _ in range(1000):
            if sum(fake.in_flight for fake in fakes) == 2:
                break
            await asyncio.sleep(0.01)
        # Both held upstream: a third is refused while they still are.
        refused = await infer(session, base)
        assert sum(fake.in_flight for fake in fakes) == 2
        gate.set()
        done = await asyncio.gather(*held)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    assert "limit" in refused.body["error"]
    assert [answer.status for answer in done] == [200, 200]


async def test_the_shadow_never_touches_the_primary_answer() -> None:
    async with replicas(2) as (port, fakes), replicas(1) as (shadow_port, (shadow,)):
        shadow.status = 500
        gate = asyncio.Event()
        shadow.gate = gate
        flags = (
            "--predictor_host", target(port, fakes),
            "--predictor_shadow_host", f"127.0.0.1:{shadow_port}", "--shadow_percent", "100",
        )  # fmt: skip
        async with gateway(*flags) as base:
            # The shadow holds every copy: the primary answers all the same, unchanged.
            answers = await send(base, 10, concurrency=2)
            assert all(answer.status == 200 for answer in answers)
            assert {answer.replica for answer in answers} <= {fake.host for fake in fakes}
            assert shadow.in_flight == 10
            gate.set()
            for _ in range(500):
                text = await metrics(base)
                if 'gateway_shadow_mismatches_total{model_name="m"} 10.0' in text:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"no mismatch counted: {text}")
    assert shadow.requests == 10
    assert sum(fake.requests for fake in fakes) == 10
