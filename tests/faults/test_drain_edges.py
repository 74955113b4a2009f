"""The edges of a graceful stop, with real processes: a request whose body is still arriving
at SIGTERM is read and served; requests that outlive the grace period are answered 503 /
UNAVAILABLE with a message; the process exits within the grace period plus a second.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import aiohttp
import grpc
import orjson
import pytest

from tests.e2e.support import MODEL, gateway_command, predictor_command, start_servers
from tests.faults.support import (
    MARGIN,
    Probe,
    grpc_call,
    kinds,
    report,
    rest_call,
    until_in_flight,
)
from tests.server.procs import ServerProcess

GRACE = 3.0
# Longer than any test waits: a request to it outlives the grace period.
SLOW_PREDICTOR = 60.0


@pytest.fixture
def slow_gateway() -> Iterator[ServerProcess]:
    with ExitStack() as stack:
        predictor = start_servers(stack, predictor_command("--delay", str(SLOW_PREDICTOR)))[0]
        (gateway,) = start_servers(stack, _gateway(predictor))
        yield gateway


@pytest.fixture
def quick_gateway() -> Iterator[ServerProcess]:
    with ExitStack() as stack:
        predictor = start_servers(stack, predictor_command())[0]
        (gateway,) = start_servers(stack, _gateway(predictor))
        yield gateway


def _gateway(predictor: ServerProcess) -> list[str]:
    address = f"127.0.0.1:{predictor.http_port}"
    timeout = ("--predictor_request_timeout_seconds", str(SLOW_PREDICTOR))
    return gateway_command(address, "v2", *timeout, "--grace_period", str(GRACE))


async def test_requests_past_the_grace_period_are_answered_and_the_process_exits_on_time(
    slow_gateway: ServerProcess,
) -> None:
    gateway = slow_gateway
    client_timeout = SLOW_PREDICTOR  # a hang would be seen as one
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
    ):
        calls = [
            asyncio.ensure_future(
                rest_call(session, gateway.base_url, Probe.new(), timeout=client_timeout)
            ),
            asyncio.ensure_future(grpc_call(channel, Probe.new(), timeout=client_timeout)),
        ]
        async with aiohttp.ClientSession() as probe_session:
            await until_in_flight(probe_session, gateway, len(calls))
        gateway.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        outcomes = await asyncio.gather(*calls)
    code = await asyncio.to_thread(gateway.wait, GRACE + 1 + MARGIN)
    exited_after = time.monotonic() - stopped_at
    report(
        "drain_past_grace",
        outcomes=kinds(outcomes),
        grace_period=GRACE,
        exited_after_seconds=round(exited_after, 2),
    )
    assert [o.kind for o in outcomes] == ["503", "UNAVAILABLE"], outcomes
    for outcome in outcomes:
        assert "grace period" in outcome.detail, outcome
    assert code == 0, gateway.output()[-2000:]
    # Before, the process took twice the grace period; now the grace period and a second
    # (the figure is in the report; the bound here only tells the two apart).
    assert exited_after < 2 * GRACE, exited_after


async def test_a_body_arriving_at_sigterm_is_read_and_served(quick_gateway: ServerProcess) -> None:
    gateway = quick_gateway
    probe = Probe.new(size=200_000)  # about 1.5 MB of JSON, sent in two halves
    body = probe.rest_body()
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
    try:
        writer.write(head + body[: len(body) // 2])
        await writer.drain()
        async with aiohttp.ClientSession() as session:
            await until_in_flight(session, gateway, 1)
        gateway.signal(signal.SIGTERM)
        await asyncio.sleep(GRACE / 4)  # the stop has begun; the body is still incomplete
        writer.write(body[len(body) // 2 :])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), GRACE + MARGIN)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MARGIN)
        length = next(
            int(line.split(b":", 1)[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = await asyncio.wait_for(reader.readexactly(length), MARGIN)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 200"), (status_line, answer[:300])
    assert orjson.loads(answer)["outputs"][0]["data"] == list(probe.values)
    assert await asyncio.to_thread(gateway.wait, GRACE + 1 + MARGIN) == 0


def test_a_connection_is_not_left_open_past_the_stop(quick_gateway: ServerProcess) -> None:
    """A client that opened a connection and sent nothing is closed at the stop, at once."""
    gateway = quick_gateway
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=GRACE + MARGIN) as s:
        time.sleep(0.2)
        gateway.signal(signal.SIGTERM)
        assert s.recv(1) == b""  # closed, not reset and not left hanging
    assert gateway.wait(GRACE + 1 + MARGIN) == 0
