"""Several server processes on the same ports (``--workers N``).

The parent binds the REST socket once and every worker accepts on it; gRPC cannot take a
socket, so each worker binds the gRPC port with SO_REUSEPORT and the kernel spreads the
connections. Metrics go to a shared directory so `/metrics` adds up every worker. The parent
forwards SIGTERM / SIGINT to the workers and exits when they all have.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from gateway.settings import ServerSettings

logger = logging.getLogger("gateway.workers")


@dataclass(frozen=True)
class Shared:
    """What the workers share: the REST socket they accept on, the gRPC port they each bind
    (SO_REUSEPORT), and the directory their metrics are pooled in."""

    rest_socket: socket.socket
    grpc_port: int
    metrics_dir: str


def run(settings: ServerSettings, serve: Callable[[Shared], None]) -> None:
    """Fork `settings.workers` processes, each running `serve` on what they share; wait for
    them all."""
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    rest_socket = _listening_socket(settings.listen_address, settings.http_port)
    grpc_port = settings.grpc_port
    # With port 0, hold a reuse-port socket on a free port so every worker binds the same one.
    grpc_hold = _reserve(settings.listen_address, grpc_port) if settings.enable_grpc else None
    if grpc_hold is not None:
        grpc_port = grpc_hold.getsockname()[1]
    # fork: workers inherit the loaded models and the listening socket.
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(
            target=_worker,
            args=(serve, Shared(rest_socket, grpc_port, metrics_dir)),
            name=f"gateway-worker-{index}",
        )
        for index in range(settings.workers)
    ]
    for process in processes:
        process.start()
    logger.info(
        "%d workers on REST %s, gRPC %s",
        len(processes),
        rest_socket.getsockname()[1],
        grpc_port,
    )

    def forward(sig: int, _: FrameType | None) -> None:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rest_socket.close()
        if grpc_hold is not None:
            grpc_hold.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [p.name for p in processes if p.exitcode]
    if failed:
        raise SystemExit(f"workers failed: {', '.join(failed)}")


def _worker(serve: Callable[[Shared], None], shared: Shared) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    serve(shared)


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def _reserve(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
