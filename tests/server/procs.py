"""Run a gateway server as a real process and find the ports it bound."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening: REST on (\d+), gRPC on (\w+)")
_WORKERS = re.compile(r"(\d+) workers on REST (\d+), gRPC (\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    http_port: int = 0
    grpc_port: int | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return "".join(self.lines)


# A port asked for by number may be held for a moment by any client on the machine (handed it
# as an ephemeral port) while no server listens there: tests restart servers on their ports.
PORT_TAKEN = "is already in use"
STARTS = 10


@contextmanager
def run_server(*args: str, startup_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Start `python -m <args>` on 127.0.0.1; yield once the ports it bound are known."""
    for start in range(1, STARTS + 1):
        server, reader = _spawn(args, startup_timeout)
        if server.http_port or PORT_TAKEN not in server.output() or start == STARTS:
            break
        _stop(server, reader)
        time.sleep(0.2)
    try:
        if not server.http_port:
            raise RuntimeError(f"server did not start:\n{server.output()}")
        yield server
    finally:
        _stop(server, reader)


def _spawn(args: tuple[str, ...], startup_timeout: float) -> tuple[ServerProcess, threading.Thread]:
    """Start the process; return once it said its ports, ended, or `startup_timeout` passed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", *args, "--listen_address", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = ServerProcess(process)
    settled = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line)
            single, many = _LISTENING.search(line), _WORKERS.search(line)
            if many:
                server.http_port, server.grpc_port = int(many.group(2)), int(many.group(3))
                settled.set()
            elif single and not settled.is_set():
                server.grpc_port = int(single.group(2)) if single.group(2).isdigit() else None
                server.http_port = int(single.group(1))
                settled.set()
        settled.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    settled.wait(startup_timeout)
    return server, reader


def _stop(server: ServerProcess, reader: threading.Thread) -> None:
    process = server.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    reader.join(timeout=5)
    if process.stdout is not None:
        process.stdout.close()


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
