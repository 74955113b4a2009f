"""Soak: many clients for a fixed time while the predictor is killed and restarted.

Two ``gateway serve`` processes (one to the predictor's REST v2 port, one to its gRPC port)
serve REST and gRPC clients that send requests with unique data back to back, each call
with its own timeout. Every few seconds the echo predictor is SIGKILLed and started again on
the same ports. Every request must be accounted for: its own echo, or a clear error (502 /
503 / 504, UNAVAILABLE / INTERNAL / DEADLINE_EXCEEDED, with a message); no call may hit
its client timeout, no answer may be another request's. The gateways' RSS may grow less
than 10% after the warm-up; their descriptors must come back to the baseline once the
clients are gone; their connections to the predictor must stay within the pool.

It runs for 20 s by default; ``GATEWAY_SOAK_SECONDS=600`` runs it for ten minutes. With
``GATEWAY_RELIABILITY_REPORT=path`` its figures are appended to that file (JSON lines).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest

from tests.e2e.support import gateway_command, predictor_command, start_servers
from tests.faults.support import (
    FD_TOLERANCE,
    HANG_AFTER,
    Outcome,
    Probe,
    Usage,
    Watch,
    grpc_call,
    in_flight,
    kinds,
    quiet,
    report,
    rest_call,
)
from tests.hops.upstreams import free_port
from tests.server.procs import ServerProcess

DURATION = float(os.environ.get("GATEWAY_SOAK_SECONDS") or 20)
# The first quarter (at most 30 s) warms up: pools, channels, allocator arenas fill.
WARM_UP = min(30.0, DURATION / 4)
# Seconds the predictor stays up between kills (its restart takes a second or two more).
UP_FOR = 3.0
TIMEOUT = 5.0
# Fewer pooled connections than clients per gateway, so that the pool's bound is tested.
POOL = 4
REST_CLIENTS = 4  # per gateway
GRPC_CLIENTS = 2  # per gateway
# gRPC to the predictor: one HTTP/2 connection, and briefly a second while it reconnects.
GRPC_CONNECTIONS = 2
# Every eighth request carries 64 KiB of data.
LARGE_EVERY, LARGE = 8, 16 * 1024
RSS_GROWTH = 0.10
FLAGS = (
    "--predictor_request_timeout_seconds", str(TIMEOUT),
    "--predictor_request_retries", "2",
    "--predictor_max_connections", str(POOL),
    "--enable_latency_logging", "false",
)  # fmt: skip
CLEAR = {
    "rest": {"502", "503", "504"},
    "grpc": {"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"},
}


@dataclass
class Gauges:
    """What the sampler saw of one gateway."""

    watch: Watch
    pool: int
    warm: Usage | None = None
    warm_index: int = 0
    samples: list[Usage] = field(default_factory=list)

    def rss_series(self, points: int = 12) -> list[float]:
        """RSS (MiB) at evenly spaced samples over the run, for the report."""
        step = max(1, len(self.samples) // points)
        return [sample.rss_mib for sample in self.samples[::step]]

    @property
    def max_upstream(self) -> int:
        return max(s.upstream_sockets for s in self.samples)

    @property
    def max_rss_after_warm_up(self) -> int:
        return max(s.rss_kib for s in self.samples[self.warm_index :])


class Flapping:
    """The predictor, killed and restarted on the same ports until told to stop."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.current = ExitStack()
        self.flaps = 0
        self.down_seconds = 0.0

    def start(self) -> ServerProcess:
        (server,) = start_servers(self.current, self.command)
        return server

    async def run(self, until: float) -> None:
        while time.monotonic() + UP_FOR < until:
            await asyncio.sleep(UP_FOR)
            down = time.monotonic()
            await asyncio.to_thread(self.current.close)  # SIGKILL
            self.current = ExitStack()
            await asyncio.to_thread(self.start)
            self.flaps += 1
            self.down_seconds += time.monotonic() - down

    def close(self) -> None:
        self.current.close()


Call = Callable[[Probe], Awaitable[Outcome]]


async def _client(call: Call, outcomes: list[Outcome], until: float) -> None:
    sent = 0
    while time.monotonic() < until:
        sent += 1
        outcome = await call(Probe.new(LARGE if sent % LARGE_EVERY == 0 else 0))
        outcomes.append(outcome)
        if not outcome.ok:
            await asyncio.sleep(0.05)  # as a client would, before trying again


def _rest(session: aiohttp.ClientSession, url: str) -> Call:
    return lambda probe: rest_call(session, url, probe, timeout=TIMEOUT + HANG_AFTER)


def _grpc(channel: grpc.aio.Channel) -> Call:
    return lambda probe: grpc_call(channel, probe, timeout=TIMEOUT + HANG_AFTER)


async def _load(gateways: list[ServerProcess], outcomes: list[Outcome], until: float) -> None:
    """REST_CLIENTS and GRPC_CLIENTS clients per gateway, each on a connection of its own,
    sending back to back until `until`."""
    async with AsyncExitStack() as stack:
        calls = []
        for gateway in gateways:
            for _ in range(REST_CLIENTS):
                session = await stack.enter_async_context(aiohttp.ClientSession())
                calls.append(_rest(session, gateway.base_url))
            for _ in range(GRPC_CLIENTS):
                address = f"127.0.0.1:{gateway.grpc_port}"
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
                calls.append(_grpc(channel))
        await asyncio.gather(*(_client(call, outcomes, until) for call in calls))


async def _sample(gauges: list[Gauges], warm_at: float, until: float) -> None:
    while time.monotonic() < until:
        for gauge in gauges:
            usage = gauge.watch.now()
            gauge.samples.append(usage)
            if gauge.warm is None and time.monotonic() >= warm_at:
                gauge.warm, gauge.warm_index = usage, len(gauge.samples) - 1
        await asyncio.sleep(0.25)


@pytest.mark.timeout(DURATION + 120)
async def test_soak_with_a_flapping_predictor() -> None:
    ports = ("--http_port", str(free_port()), "--grpc_port", str(free_port()))
    rest_port, grpc_port = int(ports[1]), int(ports[3])
    predictor = Flapping(predictor_command(*ports))
    with ExitStack() as processes:
        processes.callback(predictor.close)
        _, servers = await asyncio.gather(
            asyncio.to_thread(predictor.start),
            asyncio.to_thread(
                start_servers,
                processes,
                gateway_command(f"127.0.0.1:{rest_port}", "v2", *FLAGS),
                gateway_command(f"127.0.0.1:{grpc_port}", "grpc-v2", *FLAGS),
            ),
        )
        gauges = [
            Gauges(Watch(servers[0], (rest_port,)), POOL),
            Gauges(Watch(servers[1], (grpc_port,)), GRPC_CONNECTIONS),
        ]
        # A first round without faults; the descriptors after it are the baseline.
        first: list[Outcome] = []
        await _load(servers, first, time.monotonic() + 1.0)
        assert all(o.ok for o in first), kinds(first)
        baselines = await asyncio.gather(*(quiet(gauge.watch) for gauge in gauges))
        for gauge, baseline in zip(gauges, baselines, strict=True):
            gauge.watch.baseline = baseline

        outcomes: list[Outcome] = []
        started = time.monotonic()
        until = started + DURATION
        await asyncio.gather(
            _load(servers, outcomes, until),
            predictor.run(until),
            _sample(gauges, started + WARM_UP, until),
        )
        elapsed = time.monotonic() - started

        # Load gone, the predictor up: descriptors back to the baseline, nothing in flight.
        ended = []
        for gauge in gauges:
            ended.append(await gauge.watch.settled(gauge.pool, timeout=15))
        async with aiohttp.ClientSession() as session:
            still = [await in_flight(session, server) for server in servers]
            # Within gRPC's reconnect backoff (at most 5 s) of the predictor's last restart.
            after = [await _answered(session, server) for server in servers]

    by_kind = kinds(outcomes)
    for gauge, end, server in zip(gauges, ended, servers, strict=True):
        assert gauge.watch.baseline is not None
        assert gauge.warm is not None
        report(
            "soak",
            gateway="REST v2 predictor" if gauge is gauges[0] else "gRPC predictor",
            rss_mib_warm=gauge.warm.rss_mib,
            rss_mib_max_after_warm_up=round(gauge.max_rss_after_warm_up / 1024, 1),
            rss_mib_end=end.rss_mib,
            rss_mib_series=gauge.rss_series(),
            fds_baseline=gauge.watch.baseline.fds,
            fds_max=max(s.fds for s in gauge.samples),
            fds_end=end.fds,
            max_upstream_sockets=gauge.max_upstream,
            pool=gauge.pool,
            pid=server.process.pid,
        )
    report(
        "soak-total",
        seconds=round(elapsed, 1),
        clients=len(servers) * (REST_CLIENTS + GRPC_CLIENTS),
        requests=len(outcomes),
        ok=sum(o.ok for o in outcomes),
        by_kind=by_kind,
        hangs=sum(o.kind == "hang" for o in outcomes),
        wrong=sum(o.kind == "wrong" for o in outcomes),
        max_error_seconds=round(max((o.elapsed for o in outcomes if not o.ok), default=0), 2),
        predictor_kills=predictor.flaps,
        predictor_down_seconds=round(predictor.down_seconds, 1),
    )

    assert predictor.flaps >= 1
    for outcome in outcomes:
        assert outcome.ok or outcome.kind in CLEAR[outcome.transport], outcome
        assert outcome.elapsed < TIMEOUT + HANG_AFTER, outcome
    assert sum(o.ok for o in outcomes) > len(outcomes) // 4, by_kind
    for gauge, end in zip(gauges, ended, strict=True):
        assert gauge.warm is not None
        assert gauge.max_upstream <= gauge.pool, gauge.samples
        assert end.rss_kib <= gauge.warm.rss_kib * (1 + RSS_GROWTH), (gauge.warm, end)
        base = gauge.watch.baseline
        assert base is not None
        own = end.fds - end.upstream_sockets
        assert own <= base.fds - base.upstream_sockets + FD_TOLERANCE, (base, end)
    assert still == [0.0, 0.0], "requests still counted in flight"
    assert all(o.ok for o in after), after


async def _answered(session: aiohttp.ClientSession, server: ServerProcess) -> Outcome:
    """The first answer other than 503 from `server`, tried for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        outcome = await rest_call(session, server.base_url, Probe.new(), timeout=30)
        if outcome.kind != "503" or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.1)
