"""Several server processes on the same ports (``--workers N``).

The parent binds the REST socket once and every worker accepts on it; gRPC cannot take a
socket, so each worker binds the gRPC port with SO_REUSEPORT and the kernel spreads the
connections. Metrics go to a shared directory so `/metrics` adds up every worker. The parent
forwards SIGTERM / SIGINT to the workers and exits when they all have.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.model_server import ModelServer

logger = logging.getLogger("gateway.workers")


def run(server: ModelServer) -> None:
    """Fork `server.settings.workers` processes serving the same ports; wait for them."""
    settings = server.settings
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
            args=(server, rest_socket, grpc_port, metrics_dir),
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


def _worker(
    server: ModelServer, rest_socket: socket.socket, grpc_port: int, metrics_dir: str
) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    server._shared_socket = rest_socket
    server._metrics_dir = metrics_dir
    server.settings = dataclasses.replace(
        server.settings, grpc_port=grpc_port, grpc_reuse_port=True
    )
    server.run_process()


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
