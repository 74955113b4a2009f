"""A flood of idle client connections against a gateway process with few file descriptors:
past --max_connections new connections are closed at once, and the gateway keeps the
descriptors it needs to reach its predictor; if it runs out anyway, it says so itself (503)
rather than blaming the predictor.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import aiohttp
import pytest

from tests.e2e.support import gateway_command, predictor_command, start_servers
from tests.faults.support import Outcome, Probe, report, rest_call
from tests.server.procs import ServerProcess

DESCRIPTORS = 256
FLOOD = 400
# Requests at once after the flood, each held by the predictor long enough that each needs
# a connection of its own to it: new ones, since none was opened before.
AT_ONCE = 3
DELAY = 0.5


@contextmanager
def _descriptor_limit(soft: int) -> Iterator[None]:
    """Processes started inside the block inherit `soft` as their descriptor limit."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def _gateway(*flags: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with ExitStack() as stack:
        (predictor,) = start_servers(stack, predictor_command("--delay", str(DELAY)))
        with _descriptor_limit(DESCRIPTORS):
            command = gateway_command(f"127.0.0.1:{predictor.http_port}", "v2", *flags)
            (gateway,) = start_servers(stack, command)
        yield gateway, predictor


@pytest.fixture
def capped() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    yield from _gateway()  # the default cap: from the descriptor limit


@pytest.fixture
def uncapped() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    yield from _gateway("--max_connections", str(10 * DESCRIPTORS))


async def _opened(session: aiohttp.ClientSession, gateway: ServerProcess) -> None:
    """Open AT_ONCE client connections, without any call to the predictor."""

    async def live() -> None:
        async with session.get(f"{gateway.base_url}/v2/health/live") as answer:
            assert answer.status == 200
            await asyncio.sleep(0.2)  # held, so that each probe takes a connection of its own

    await asyncio.gather(*(live() for _ in range(AT_ONCE)))


async def _calls(session: aiohttp.ClientSession, gateway: ServerProcess) -> list[Outcome]:
    return list(
        await asyncio.gather(
            *(rest_call(session, gateway.base_url, Probe.new(), timeout=10) for _ in range(AT_ONCE))
        )
    )


async def _flood(port: int) -> tuple[list[socket.socket], int]:
    """Open FLOOD idle connections; return them and how many the gateway closed at once."""
    sockets = []
    for _ in range(FLOOD):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sockets.append(sock)
    await asyncio.sleep(0.5)  # the closing of those past the cap reaches us
    closed = 0
    for sock in sockets:
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass  # open and idle
        except OSError:
            closed += 1
    return sockets, closed


async def test_past_max_connections_new_ones_are_closed_and_the_predictor_stays_reachable(
    capped: tuple[ServerProcess, ServerProcess],
) -> None:
    gateway, _ = capped
    connector = aiohttp.TCPConnector(limit=AT_ONCE)  # opened before the flood
    async with aiohttp.ClientSession(connector=connector) as session:
        await _opened(session, gateway)
        sockets, closed = await _flood(gateway.http_port)
        try:
            outcomes = await _calls(session, gateway)
            async with session.get(f"{gateway.base_url}/metrics") as answer:
                metrics = await answer.text()
        finally:
            for sock in sockets:
                sock.close()
    report("connection_flood", descriptors=DESCRIPTORS, flood=FLOOD, closed_at_once=closed)
    assert closed > 0, "no connection past the cap was closed"
    assert all(outcome.ok for outcome in outcomes), outcomes
    assert 'gateway_connections_closed_total{reason="max_connections"}' in metrics
    assert "Too many open files" not in gateway.output()


async def test_out_of_descriptors_is_the_gateways_own_503(
    uncapped: tuple[ServerProcess, ServerProcess],
) -> None:
    gateway, _ = uncapped
    connector = aiohttp.TCPConnector(limit=AT_ONCE)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _opened(session, gateway)
        sockets, _ = await _flood(gateway.http_port)
        try:
            outcomes = await _calls(session, gateway)
        finally:
            for sock in sockets:
                sock.close()
    refused = [o for o in outcomes if not o.ok]
    assert refused, outcomes
    for outcome in refused:
        assert outcome.kind == "503", outcome
        assert "gateway is out of file descriptors" in outcome.detail, outcome
        assert "cannot connect to the predictor" not in outcome.detail
