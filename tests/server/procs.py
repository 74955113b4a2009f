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


@contextmanager
def run_server(*args: str, startup_timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Start `python -m <args>` on ports 0 of 127.0.0.1; yield once the ports are known."""
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
    found = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line)
            single, many = _LISTENING.search(line), _WORKERS.search(line)
            if many:
                server.http_port, server.grpc_port = int(many.group(2)), int(many.group(3))
                found.set()
            elif single and not found.is_set():
                server.http_port = int(single.group(1))
                server.grpc_port = int(single.group(2)) if single.group(2).isdigit() else None
                found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not found.wait(startup_timeout):
            raise RuntimeError(f"server did not start:\n{server.output()}")
        yield server
    finally:
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
