"""Pools behind a gRPC hop, through the whole gateway (REST v2 in, gRPC v2 out) in front of
our own gRPC servers on 127.0.0.1-3 (one port): shares within bounds, a replica killed under
load ejected with its requests retried on the others, and each attempt's CLIENT span naming
its replica, in ``/traces.json`` and on the ``/traces`` page."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc

from gateway import InferOutput, InferRequest, InferResponse
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.server.grpc import create_grpc_server
from tests.hops.upstreams import SETTINGS, dataplane

from .replicas import shared_port
from .through import (
    TRACED_ROUND_ROBIN,
    check_attempts_name_their_replicas,
    gateway,
    metrics,
    send,
    traced_requests,
)

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


class Named(Model):
    """Model ``m`` of one replica: answers its host (a BYTES output), counting its calls."""

    def __init__(self, host: str) -> None:
        super().__init__("m")
        self.host = host
        self.ready = True
        self.delay = 0.0
        self.calls = 0
        self.in_flight = 0
        self.arrived = asyncio.Event()

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        assert isinstance(payload, InferRequest)
        self.calls += 1
        self.in_flight += 1
        self.arrived.set()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            output = InferOutput("replica", [1], "BYTES", data=[self.host])
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[output]
            )
        finally:
            self.in_flight -= 1


class Replica:
    """Our gRPC server for a `Named` model, on `host`."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.model = Named(host)
        self.server: grpc.aio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = create_grpc_server(dataplane([self.model]), SETTINGS, Metrics())
        assert self.server.add_insecure_port(f"{self.host}:{port}") == port
        await self.server.start()

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop(None)


@asynccontextmanager
async def pool_of(count: int) -> AsyncIterator[tuple[str, list[Replica]]]:
    """`count` gRPC replicas sharing a port; yields the pool's ``--predictor_host``."""
    hosts = HOSTS[:count]
    port = shared_port(hosts)
    started = [Replica(host) for host in hosts]
    async with AsyncExitStack() as stack:
        for replica in started:
            await replica.start(port)
            stack.push_async_callback(replica.stop)
        yield ",".join(f"{host}:{port}" for host in hosts), started


def grpc_gateway(pool: str, *flags: str) -> Any:
    return gateway("--predictor_host", pool, "--predictor_protocol", "grpc-v2", *flags)


async def test_equal_grpc_replicas_get_equal_shares() -> None:
    async with pool_of(3) as (pool, replicas), grpc_gateway(pool) as base:
        answers = await send(base, 240, concurrency=8)
        text = await metrics(base)
    assert all(answer.status == 200 for answer in answers), [a.body for a in answers][:3]
    shares = Counter(answer.replica for answer in answers)
    assert set(shares) == set(HOSTS)
    assert all(40 <= shares[host] <= 120 for host in HOSTS), shares
    assert [replica.model.calls for replica in replicas] == [shares[host] for host in HOSTS]
    for address in pool.split(","):
        assert f'hop="predictor",model_name="m",outcome="success",replica="{address}"' in text


async def test_a_killed_grpc_replica_is_ejected_and_its_share_retried_elsewhere() -> None:
    async with pool_of(3) as (pool, replicas):
        for replica in replicas:
            replica.model.delay = 0.005
        victim = replicas[0]
        victim_at = pool.split(",")[0]
        flags = ("--predictor_request_retries", "2")
        async with grpc_gateway(pool, *flags) as base:
            load = asyncio.ensure_future(send(base, 300, concurrency=6))
            await asyncio.wait_for(victim.model.arrived.wait(), 10)
            in_flight = victim.model.in_flight
            await victim.stop()
            served_by_victim = victim.model.calls
            answers = await asyncio.wait_for(load, 60)
            text = await metrics(base)
    failed = [answer for answer in answers if answer.status != 200]
    # Calls refused after the kill are retried on the others: only what was on the victim
    # when it stopped (at most one request per client) can have failed.
    assert len(failed) <= max(in_flight, 6), [(a.status, a.body) for a in failed]
    assert victim.model.calls == served_by_victim, "nothing reached it after it stopped"
    ejected = (
        f'gateway_replica_ejections_total{{hop="predictor",model_name="m",replica="{victim_at}"}}'
    )
    assert f"{ejected} 1.0" in text
    others = Counter(answer.replica for answer in answers if answer.status == 200)
    assert others[HOSTS[1]] + others[HOSTS[2]] >= 300 - served_by_victim - len(failed)


async def test_each_attempts_client_span_names_its_replica_in_traces() -> None:
    async with pool_of(3) as (pool, replicas):
        await replicas[1].stop()
        async with grpc_gateway(pool, *TRACED_ROUND_ROBIN) as base:
            answers, attempts, page = await traced_requests(base, 6)
    check_attempts_name_their_replicas(pool.split(","), answers, attempts, page)
