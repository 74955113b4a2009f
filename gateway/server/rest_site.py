"""The REST door's listener: the app behind our connection limits and access log, on its
own port or on a socket the workers share."""

from __future__ import annotations

import socket
import ssl

from aiohttp import web

from gateway.metrics import Metrics
from gateway.server import access_log, connections
from gateway.server.drain import CLOSE_SECONDS
from gateway.settings import ServerSettings

__all__ = ["listen"]


async def listen(
    app: web.Application,
    settings: ServerSettings,
    metrics: Metrics,
    *,
    traced: bool,
    shared_socket: socket.socket | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns its runner (to clean up) and the port it listens on."""
    limits = connections.ClientLimits(
        max_connections=settings.max_connections or connections.default_max_connections(),
        write_timeout=settings.write_timeout,
        max_write_buffer=settings.max_write_buffer,
        closed=lambda reason: metrics.connections_closed.labels(reason).inc(),
    )
    runner = connections.GatewayRunner(
        app,
        limits,
        handle_signals=False,
        access_log_class=access_log.access_logger_class(settings.access_log_format, traced=traced),
        access_log_format=access_log.aiohttp_format(settings.access_log_format),
        logger=access_log.server_logger(),
        keepalive_timeout=settings.timeout_keep_alive,
        # The grace period is the drain's (gateway.server.drain); aiohttp only closes.
        shutdown_timeout=CLOSE_SECONDS,
    )
    await runner.setup()
    site: web.BaseSite
    if shared_socket is not None:
        site = web.SockSite(runner, shared_socket, ssl_context=ssl_context)
    else:
        site = web.TCPSite(
            runner, settings.listen_address, settings.http_port, ssl_context=ssl_context
        )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else settings.http_port
