"""Several server processes on the same ports (``--workers N``).

The parent binds the REST socket once and every worker accepts on it; gRPC cannot take a
socket, so each worker binds the gRPC port with SO_REUSEPORT and the kernel spreads the
connections. Metrics go to a shared directory so `/metrics` adds up every worker. The parent
forwards SIGTERM / SIGINT to the workers and exits when they all have.

A worker that dies on its own (killed, out of memory, a crash) is replaced, after a backoff
that grows while replacements keep dying young; meanwhile every worker answers not ready
(`Shared.all_alive`), so that the pod leaves the load balancer rather than serve on fewer
processes than it was sized for.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from gateway.settings import ServerSettings

logger = logging.getLogger("gateway.workers")


@dataclass(frozen=True)
class Shared:
    """What the workers share: the REST socket they accept on, the gRPC port they each bind
    (SO_REUSEPORT), and the directory their metrics are pooled in."""

    rest_socket: socket.socket
    grpc_port: int
    metrics_dir: str
    # One flag per worker slot, in shared memory: set by the worker once it serves, cleared
    # by the parent when it dies.
    serving: Any = None
    slot: int = 0

    def mark_serving(self) -> None:
        """Count this worker as serving (once its servers listen)."""
        if self.serving is not None:
            self.serving[self.slot] = 1

    def all_alive(self) -> bool:
        """Whether every worker asked for is serving."""
        return self.serving is None or all(self.serving)


# Backoff before a dead worker is replaced: doubles while replacements die within
# `_YOUNG` seconds, from `_FIRST_DELAY` up to `_LAST_DELAY`.
_FIRST_DELAY = 0.5
_LAST_DELAY = 30.0
_YOUNG = 30.0


def run(settings: ServerSettings, serve: Callable[[Shared], None]) -> None:
    """Fork `settings.workers` processes, each running `serve` on what they share, replace
    those that die until a stop; wait for them all."""
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    rest_socket = _listening_socket(settings.listen_address, settings.http_port)
    grpc_port = settings.grpc_port
    # With port 0, hold a reuse-port socket on a free port so every worker binds the same one.
    grpc_hold = _reserve(settings.listen_address, grpc_port) if settings.enable_grpc else None
    if grpc_hold is not None:
        grpc_port = grpc_hold.getsockname()[1]
    # fork: workers inherit the loaded models and the listening socket.
    context = multiprocessing.get_context("fork")
    serving = context.Array(ctypes.c_byte, settings.workers, lock=False)
    shared = Shared(rest_socket, grpc_port, metrics_dir, serving)
    supervisor = _Supervisor(context, serve, shared)
    for index in range(settings.workers):
        supervisor.start(index)
    logger.info(
        "%d workers on REST %s, gRPC %s",
        settings.workers,
        rest_socket.getsockname()[1],
        grpc_port,
    )
    previous = {
        sig: signal.signal(sig, supervisor.forward) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        supervisor.watch()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        rest_socket.close()
        if grpc_hold is not None:
            grpc_hold.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    # A worker stopped by the signal before it had set its own handlers has not failed.
    stopped = (0, -signal.SIGTERM, -signal.SIGINT)
    failed = [p.name for p in supervisor.processes.values() if p.exitcode not in stopped]
    if failed:
        raise SystemExit(f"workers failed: {', '.join(failed)}")


class _Supervisor:
    """The workers by slot: started, watched, replaced when they die before a stop."""

    def __init__(self, context: Any, serve: Callable[[Shared], None], shared: Shared) -> None:
        self._context = context
        self._serve = serve
        self._shared = shared
        self.processes: dict[int, BaseProcess] = {}
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._stopping = False

    def start(self, slot: int) -> None:
        shared = dataclasses.replace(self._shared, slot=slot)
        process = self._context.Process(
            target=_worker, args=(self._serve, shared), name=f"gateway-worker-{slot}"
        )
        process.start()
        self.processes[slot] = process
        self._started[slot] = time.monotonic()

    def forward(self, sig: int, _: FrameType | None) -> None:
        """Pass a stop signal on to every worker; none is replaced from now on."""
        self._stopping = True
        for process in self.processes.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    def watch(self) -> None:
        """Until every worker has exited: replace those that die after they began serving,
        until a stop. One that exits cleanly, or fails before it ever served (a start-up
        error that a replacement would only repeat), is not replaced."""
        due: dict[int, float] = {}  # slot -> when its replacement starts
        ended: set[int] = set()  # slots whose worker exited and is not replaced
        while True:
            now = time.monotonic()
            for slot in [slot for slot, at in due.items() if at <= now]:
                del due[slot]
                if self._stopping:
                    ended.add(slot)
                else:
                    self.start(slot)
            # The dead are found before the wait, not only after it: one that died before
            # this iteration would otherwise be left out of it and never be replaced. Each is
            # asked once: `is_alive` reaps a worker that has exited, and a dying worker's
            # sentinel wakes the wait a moment before it can be reaped, so a second answer
            # could differ from the first and the worker be lost to both.
            alive = {slot: process.is_alive() for slot, process in self.processes.items()}
            for slot, process in self.processes.items():
                if not (alive[slot] or slot in due or slot in ended):
                    self._reap(slot, process, due, ended)
            running = [self.processes[slot] for slot, living in alive.items() if living]
            if not running and not due:
                return
            timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
            multiprocessing.connection.wait([p.sentinel for p in running], timeout)

    def _reap(self, slot: int, process: Any, due: dict[int, float], ended: set[int]) -> None:
        """Collect the worker of `slot` that exited; schedule its replacement if it died."""
        process.join()
        served = bool(self._shared.serving[slot])
        self._shared.serving[slot] = 0
        if self._stopping or process.exitcode == 0 or not served:
            ended.add(slot)
            return
        delay = self._backoff(slot)
        logger.error(
            "worker %s (pid %s) exited with %s; replacing it in %g s",
            process.name,
            process.pid,
            process.exitcode,
            delay,
        )
        due[slot] = time.monotonic() + delay

    def _backoff(self, slot: int) -> float:
        lived = time.monotonic() - self._started.get(slot, 0.0)
        previous = self._delay.get(slot)
        delay = _FIRST_DELAY if previous is None or lived > _YOUNG else previous * 2
        self._delay[slot] = delay = min(delay, _LAST_DELAY)
        return delay


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
