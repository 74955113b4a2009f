"""What one REST client can hold: a connection, among at most `max_connections`, and an
answer it does not read, for at most `write_timeout` seconds with at most about
`max_write_buffer` bytes queued for its socket.

aiohttp writes a whole answer to the socket's transport at once and then waits, without a
limit, for the client to read it: a client that never reads would keep the answer (and the
request behind it) in memory for as long as it keeps the connection open. Here large answers
go out in pieces of `max_write_buffer` bytes, each once the previous one has left; a client
that reads nothing for `write_timeout` seconds, or lets more than that pile up, is
disconnected, which frees it all. Connections past `max_connections` are closed as soon as
they are accepted, so that a flood of idle connections cannot take the descriptors the
gateway needs to reach its upstreams.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from aiohttp.web_protocol import RequestHandler

__all__ = ["ClientLimits", "GatewayRunner", "default_max_connections", "paced"]

logger = logging.getLogger("gateway.server.http")

# What the transport may hold beyond one piece before its writer waits (asyncio's and uvloop's
# default high-water mark).
_HIGH_WATER = 64 << 10


def default_max_connections() -> int:
    """Client connections for a process whose descriptor limit is what it is now: all but a
    quarter of it (at least 64), kept for upstream connections, files and the listeners."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - max(64, soft // 4))


@dataclass(frozen=True)
class ClientLimits:
    """The bounds above, and what to tell when a connection is closed for one (its reason:
    ``max_connections``, ``write_timeout`` or ``write_buffer``)."""

    max_connections: int
    write_timeout: float
    max_write_buffer: int
    closed: Callable[[str], None] = lambda reason: None


class GatewayRunner(web.AppRunner):
    """aiohttp's runner, whose connections are held to `ClientLimits`."""

    def __init__(self, app: web.Application, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.client_limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The server aiohttp built, as the subclass that makes our connection handlers.
        server.__class__ = _Server
        guarded = cast(_Server, server)
        guarded.limits = self.client_limits
        guarded.open = 0
        return guarded


class _Server(web.Server):
    limits: ClientLimits
    open: int

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class _Handler(RequestHandler):
    """A connection: counted, and cut when its client stops reading."""

    _write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = cast(_Server, self._manager)
        if server.open >= server.limits.max_connections:
            # Not handed to aiohttp at all: its connection_lost returns at once without one.
            self._manager = None
            transport.close()
            server.limits.closed("max_connections")
            logger.debug("over %d connections: closed a new one", server.limits.max_connections)
            return
        server.open += 1
        super().connection_made(transport)

    def close(self) -> None:
        """Close once idle (the start of a stop): a connection whose request is still being
        served keeps reading, since aiohttp drops the bytes that arrive after `close`, so a
        body still on its way would never come; the answer closes it instead (`Drain`)."""
        if self._request_in_progress:
            return
        super().close()

    def connection_lost(self, exc: BaseException | None) -> None:
        server = cast("_Server | None", self._manager)
        if server is not None:
            server.open -= 1
        self._stop_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        server = cast("_Server | None", self._manager)
        transport = self.transport
        if server is None or transport is None:
            return
        limits = server.limits
        if transport.get_write_buffer_size() > limits.max_write_buffer + _HIGH_WATER:
            self._cut("write_buffer", f"more than {limits.max_write_buffer} bytes queued")
            return
        self._write_timer = self._loop.call_later(
            limits.write_timeout,
            self._cut,
            "write_timeout",
            f"its answer unread for {limits.write_timeout:g} s",
        )

    def resume_writing(self) -> None:
        self._stop_timer()
        super().resume_writing()

    def _stop_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _cut(self, reason: str, why: str) -> None:
        self._write_timer = None
        server = cast("_Server | None", self._manager)
        transport = self.transport
        if server is None or transport is None:
            return
        server.limits.closed(reason)
        peer = transport.get_extra_info("peername")
        logger.debug("closed the connection of %s: %s", peer[0] if peer else "a client", why)
        # Drops what is queued: the answer and the request behind it are freed.
        transport.abort()


class _PacedBody(Payload):
    """A response body written `piece` bytes at a time, each once the socket has taken the
    previous ones."""

    def __init__(self, body: bytes | bytearray, piece: int) -> None:
        super().__init__(body, content_type=None)
        self._size = len(body)
        self._piece = piece

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        view = memoryview(self._value)
        piece = self._piece
        for start in range(0, len(view), piece):
            # aiohttp's writer waits for the transport to drain after each piece.
            await writer.write(view[start : start + piece])


def paced(response: web.StreamResponse, piece: int) -> None:
    """Have `response`'s body written `piece` bytes at a time when it is larger."""
    if type(response) is not web.Response:
        return
    body = response.body
    if isinstance(body, bytes | bytearray) and len(body) > piece:
        response.body = _PacedBody(body, piece)
