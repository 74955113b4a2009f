"""Real replicas on loopback for the pool tests: small aiohttp servers that share one port on
127.0.0.1, 127.0.0.2, 127.0.0.3... (all of 127.0.0.0/8 is loopback), each counting what it
gets and answering as the test tells it; and a client that sends through a pool the way the
REST hop will (a tenacity loop around leases, errors mapped to ours)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from gateway.errors import UpstreamStatusError, UpstreamUnavailable
from gateway.hops.pool import (
    Endpoint,
    Pool,
    PoolCall,
    PoolSaturated,
    Replica,
    stop_when_retry_refused,
)


class FakeReplica:
    """One replica: `status` to answer with, `delay` before answering, `gate` to hold every
    request until it is set; counts requests (by attempt number) and the most in flight."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.status = 200
        self.delay = 0.0
        self.ready = True
        self.gate: asyncio.Event | None = None
        self.requests = 0
        self.request_ids: list[str] = []
        self.by_attempt: Counter[int] = Counter()
        self.in_flight = 0
        self.arrived = asyncio.Event()
        # Told the host of each request as it arrives, when set.
        self.arrivals: asyncio.Queue[str] | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/models/m/infer", self._infer)
        app.router.add_get("/v2/health/ready", self._ready)
        return app

    async def _infer(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.request_ids.append(request.headers.get("x-request-id", ""))
        self.by_attempt[int(request.headers.get("x-attempt", "1"))] += 1
        self.in_flight += 1
        self.arrived.set()
        if self.arrivals is not None:
            self.arrivals.put_nowait(self.host)
        try:
            if self.gate is not None:
                await asyncio.wait_for(self.gate.wait(), 10)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status != 200:
                return web.json_response({"error": "sick"}, status=self.status)
            # A v2 answer (so that a gateway can forward it) naming the replica.
            output = {"name": "replica", "datatype": "BYTES", "shape": [1], "data": [self.host]}
            return web.json_response({"model_name": "m", "outputs": [output], "replica": self.host})
        finally:
            self.in_flight -= 1

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def start(self, port: int) -> None:
        self._runner = web.AppRunner(self.app(), shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def shared_port(hosts: list[str]) -> int:
    """A port free on each of `hosts` (at the time of asking)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every loopback address")


@asynccontextmanager
async def replicas(count: int) -> AsyncIterator[tuple[int, list[FakeReplica]]]:
    """`count` replicas on 127.0.0.1..count, one port; yields the port and the replicas."""
    hosts = [f"127.0.0.{n + 1}" for n in range(count)]
    port = shared_port(hosts)
    started = [FakeReplica(host) for host in hosts]
    async with AsyncExitStack() as stack:
        for replica in started:
            await replica.start(port)
            stack.push_async_callback(replica.stop)
        yield port, started


def target(port: int, fakes: list[FakeReplica]) -> str:
    return ",".join(f"{fake.host}:{port}" for fake in fakes)


class Client:
    """Sends through a pool over one aiohttp session: our errors, retried on 502/503/504 and
    connect failures, each retry asked of the pool's budget first."""

    def __init__(self, pool: Pool[Any], retries: int = 2) -> None:
        self.pool = pool
        self.retries = retries
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def infer(self) -> str:
        with self.pool.call() as call:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.retries + 1) | stop_when_retry_refused(call),
                retry=retry_if_exception(_retryable),
                reraise=True,
            )
            answer: str = await retrying(self._attempt, call)
            return answer

    async def _attempt(self, call: PoolCall[Any]) -> str:
        with call.attempt() as lease:
            return await self.post(lease.endpoint, lease.attempt)

    async def post(self, endpoint: Endpoint, attempt: int) -> str:
        url = f"http://{endpoint.hostport}/v2/models/m/infer"
        try:
            async with self.session.post(url, json={}, headers={"x-attempt": str(attempt)}) as r:
                body = await r.json()
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(f"cannot connect: {exc}") from exc
        if r.status >= 400:
            raise UpstreamStatusError(body.get("error", ""), status=r.status)
        return str(body["replica"])

    async def ready(self, replica: Replica[Any]) -> bool:
        url = f"http://{replica.endpoint.hostport}/v2/health/ready"
        async with self.session.get(url) as r:
            return r.status == 200

    async def aclose(self) -> None:
        await self.session.close()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, UpstreamStatusError):
        return exc.status in (502, 503, 504)
    # A full pool is refused at once, not retried (the wiring's rule for the hops).
    return isinstance(exc, UpstreamUnavailable) and not isinstance(exc, PoolSaturated)
