"""What the gRPC hop's wiring relies on, shown against real grpc.aio servers on 127.0.0.1-3
(one port): one channel per replica under our balancer, a dead replica's failure read as a
connect failure (so it is ejected and the attempt retried elsewhere), a replica that leaves
keeping its channel until its call in flight ends, and ServerReady as the health probe.

Why one channel per replica rather than grpcio's own balancing: docs/pools.md.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
import pytest

from gateway._proto import SERVICE_NAME, pb
from gateway.errors import UpstreamUnavailable
from gateway.hops.grpc_wire import upstream_error
from gateway.hops.pool import (
    Endpoint,
    HealthCheckPolicy,
    Outcome,
    Pool,
    PoolSettings,
    Replica,
    StaticResolver,
    parse_target,
)

from .replicas import shared_port

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


class Upstream:
    """A bare gRPC replica: ModelInfer answers its host; `gate` holds calls; ServerReady
    answers `ready`."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.ready = True
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Event()
        self.calls = 0
        self.server = grpc.aio.server()
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(
                self._ready,
                request_deserializer=pb.ServerReadyRequest.FromString,
                response_serializer=pb.ServerReadyResponse.SerializeToString,
            ),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )

    async def _infer(self, data: bytes, context: Any) -> bytes:
        self.calls += 1
        self.arrived.set()
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)
        return self.host.encode()

    async def _ready(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.ready)


@asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[int, list[Upstream]]]:
    port = shared_port(HOSTS)
    started = [Upstream(host) for host in HOSTS]
    async with AsyncExitStack() as stack:
        for upstream in started:
            assert upstream.server.add_insecure_port(f"{upstream.host}:{port}") == port
            await upstream.server.start()
            stack.push_async_callback(upstream.server.stop, None)
        yield port, started


class Channels:
    """One channel per replica, as the pool opens and closes them."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        self._targets: dict[int, str] = {}

    def open(self, endpoint: Endpoint) -> grpc.aio.Channel:
        self.opened.append(endpoint.hostport)
        channel = grpc.aio.insecure_channel(endpoint.hostport)
        self._targets[id(channel)] = endpoint.hostport
        return channel

    async def close(self, channel: grpc.aio.Channel) -> None:
        self.closed.append(self._targets[id(channel)])
        await channel.close(None)


async def infer(replica: Replica[grpc.aio.Channel]) -> str:
    """One ModelInfer on the replica's channel, its failure mapped as the hop maps it."""
    rpc = replica.client.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
    try:
        answer: bytes = await rpc(b"", timeout=5)
    except grpc.aio.AioRpcError as exc:
        raise upstream_error(exc, "predictor", 5) from exc
    return answer.decode()


async def server_ready(replica: Replica[grpc.aio.Channel]) -> bool:
    rpc = replica.client.unary_unary(
        f"/{SERVICE_NAME}/ServerReady",
        request_serializer=pb.ServerReadyRequest.SerializeToString,
        response_deserializer=pb.ServerReadyResponse.FromString,
    )
    answer = await rpc(pb.ServerReadyRequest(), timeout=5)
    return bool(answer.ready)


def grpc_pool(text: str, channels: Channels, **kwargs: Any) -> Pool[grpc.aio.Channel]:
    return Pool(
        parse_target(text, default_port=80),
        open_client=channels.open,
        close_client=channels.close,
        random=random.Random(5),
        **kwargs,
    )


async def send(pool: Pool[grpc.aio.Channel], attempts: int = 3) -> str:
    """A request: attempts on untried replicas until one answers (the hop's retry loop)."""
    with pool.call() as call:
        for _ in range(attempts - 1):
            try:
                with call.attempt() as lease:
                    return await infer(lease.replica)
            except UpstreamUnavailable:
                assert lease.outcome is Outcome.CONNECT_FAILURE
        with call.attempt() as lease:
            return await infer(lease.replica)


async def test_one_channel_per_replica_balances_over_replicas_sharing_a_port() -> None:
    channels = Channels()
    async with upstreams() as (port, _started):
        pool = grpc_pool(",".join(f"{host}:{port}" for host in HOSTS), channels)
        answers = Counter(await asyncio.gather(*(send(pool) for _ in range(90))))
        await pool.aclose()
    assert set(answers) == set(HOSTS)
    assert all(answers[h] >= 15 for h in HOSTS), answers
    assert sorted(channels.opened) == sorted(channels.closed) == [f"{h}:{port}" for h in HOSTS]


async def test_a_dead_replica_fails_as_a_connect_failure_is_ejected_and_retried_elsewhere() -> None:
    channels = Channels()
    async with upstreams() as (port, started):
        await started[1].server.stop(None)
        pool = grpc_pool(",".join(f"{host}:{port}" for host in HOSTS), channels)
        answers = [await send(pool) for _ in range(40)]
        dead = next(r for r in pool.replicas if r.endpoint.address == HOSTS[1])
        await pool.aclose()
    assert set(answers) == {HOSTS[0], HOSTS[2]}
    assert dead.ejected
    assert dead.failures == dead.attempts == 5


async def test_a_replica_that_leaves_keeps_its_channel_until_its_call_ends() -> None:
    channels = Channels()
    async with upstreams() as (port, started):
        resolver = StaticResolver({"predictor.test": HOSTS[:2]})
        pool = grpc_pool(f"predictor.test:{port}", channels, resolver=resolver)
        await pool.start()
        leaving = next(r for r in pool.replicas if r.endpoint.address == HOSTS[0])
        started[0].gate = asyncio.Event()
        call = pool.call()
        lease = call.attempt()
        while lease.replica is not leaving:
            lease.succeeded()
            lease = call.attempt()
        in_flight = asyncio.ensure_future(infer(lease.replica))
        await asyncio.wait_for(started[0].arrived.wait(), 5)

        resolver.set("predictor.test", HOSTS[1:])
        await pool.endpoints.refresh()
        assert {await send(pool) for _ in range(20)} == set(HOSTS[1:])
        assert f"{HOSTS[0]}:{port}" not in channels.closed
        started[0].gate.set()
        assert await asyncio.wait_for(in_flight, 5) == HOSTS[0]
        lease.succeeded()
        call.close()
        for _ in range(100):  # the close is a task of the pool's: let it run (bounded)
            if channels.closed:
                break
            await asyncio.sleep(0.01)
        assert channels.closed == [f"{HOSTS[0]}:{port}"]
        await pool.aclose()


async def test_server_ready_as_the_health_probe() -> None:
    channels = Channels()
    async with upstreams() as (port, started):
        started[2].ready = False
        pool = grpc_pool(
            ",".join(f"{host}:{port}" for host in HOSTS),
            channels,
            settings=PoolSettings(health_check=HealthCheckPolicy(interval=60)),
            probe=server_ready,
        )
        await pool.start()
        assert {await send(pool) for _ in range(20)} == set(HOSTS[:2])
        assert await pool.ready()
        await started[0].server.stop(None)
        await started[1].server.stop(None)
        assert pool.health is not None
        for _ in range(3):  # unhealthy_threshold
            await pool.health.check(pool.replicas)
        assert not await pool.ready()
        with pytest.raises(grpc.aio.AioRpcError):
            await server_ready(pool.replicas[0])
        await pool.aclose()
