"""Which upstream connections `RestHop` pools again: not one that carried a 500.

The upstream here is a socket that answers as uvicorn does after an exception in the app:
a complete 500 that does not say ``Connection: close``, then, a moment later, the connection
aborted with whatever was sent on it meanwhile unread (KServe and MLServer do it when a model
raises: the next request reused the connection and got a reset, a 502 for a request nothing
was wrong with).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

import pytest

from gateway.errors import UpstreamStatusError
from gateway.hops.rest import RestHop
from gateway.hops.settings import HopSettings
from tests.hops.upstreams import serve_socket, shaped

# Longer than the hop takes to send its next request.
CLOSE_AFTER = 0.3
ROUNDS = 3


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


def _answer(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class FailsThenCloses:
    """v1 predictions of anything but "fail"; "fail" gets a 500, then its connection is
    closed within `CLOSE_AFTER`, at once (aborted) if another request comes on it. `split`:
    the 500's body comes a moment after its head (the hop has begun reading it by then)."""

    def __init__(self, split: bool) -> None:
        self.split = split
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                body = await _request(reader)
                if b"fail" not in body:
                    writer.write(_answer("200 OK", b'{"predictions": [1]}'))
                    await writer.drain()
                    continue
                failed = _answer("500 Internal Server Error", b'{"error": "it broke"}')
                if self.split:
                    head, tail = failed.split(b"\r\n\r\n")
                    writer.write(head + b"\r\n\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    failed = tail
                writer.write(failed)
                await writer.drain()
                with suppress(asyncio.TimeoutError):
                    if await asyncio.wait_for(reader.read(1), CLOSE_AFTER):
                        writer.transport.abort()  # sent meanwhile: reset, unread
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(params=[False, True], ids=["whole", "split"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FailsThenCloses, str]]:
    server = FailsThenCloses(request.param)
    async with serve_socket(server) as address:
        yield server, address


async def test_a_connection_that_carried_a_500_is_not_used_again(
    upstream: tuple[FailsThenCloses, str],
) -> None:
    server, address = upstream
    settings = HopSettings(role="predictor", host=address, protocol="v1", model_name="m")
    async with shaped(RestHop(settings)) as hop:
        for _ in range(ROUNDS):
            with pytest.raises(UpstreamStatusError) as failed:
                await hop.infer({"instances": ["fail"]}, {})
            assert failed.value.status == 500
            # Sent at once, while the failed connection is still open at the other end.
            answer = await hop.infer({"instances": [1]}, {})
            assert answer == {"predictions": [1]}
    assert server.connections == ROUNDS + 1


async def test_a_connection_that_carried_a_503_is_used_again() -> None:
    # An overloaded upstream's 503 is deliberate: the next call (a retry, say) goes on the
    # same connection, not on a new one the upstream would have to accept.
    connections = 0
    answers = [_answer("503 Service Unavailable", b'{"error": "busy"}')]

    async def busy_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await _request(reader)
                writer.write(
                    answers.pop() if answers else _answer("200 OK", b'{"predictions": [1]}')
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with serve_socket(busy_once) as address:
        settings = HopSettings(role="predictor", host=address, protocol="v1", model_name="m")
        async with shaped(RestHop(settings)) as hop:
            with pytest.raises(UpstreamStatusError) as busy:
                await hop.infer({"instances": [1]}, {})
            assert busy.value.status == 503
            assert await hop.infer({"instances": [1]}, {}) == {"predictions": [1]}
    assert connections == 1
