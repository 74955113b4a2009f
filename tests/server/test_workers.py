"""`workers.run` (server.workers): N forked processes sharing what `serve` is given. A whole
server with workers is `tests/test_model_server.py`'s; this runs the fork in a child process
of its own, so the test process's threads are never forked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.server import workers

SCRIPT = """
import json, os, sys
from gateway.server import workers
from gateway.settings import ServerSettings

out = sys.argv[1]

def serve(shared):
    record = {
        "pid": os.getpid(),
        "rest_port": shared.rest_socket.getsockname()[1],
        "grpc_port": shared.grpc_port,
        "metrics_dir": shared.metrics_dir,
        "metrics_dir_exists": os.path.isdir(shared.metrics_dir),
    }
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as file:
        json.dump(record, file)

workers.run(ServerSettings(listen_address="127.0.0.1", http_port=0, grpc_port=0, workers=3), serve)
"""


def test_each_worker_serves_the_same_ports_and_pools_its_metrics(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], check=True, timeout=60)
    records = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    assert len(records) == 3
    assert len({r["pid"] for r in records}) == 3, "one process each"
    assert len({r["rest_port"] for r in records}) == 1, "one REST socket, shared"
    assert len({r["grpc_port"] for r in records}) == 1, "one gRPC port, reserved for them"
    assert records[0]["rest_port"] != 0
    assert records[0]["grpc_port"] != 0
    assert len({r["metrics_dir"] for r in records}) == 1
    assert all(r["metrics_dir_exists"] for r in records)
    assert not Path(records[0]["metrics_dir"]).exists(), "removed once the workers are done"


def test_a_failed_worker_fails_the_run(tmp_path: Path) -> None:
    failing = SCRIPT.replace("    with open(", "    raise SystemExit(3)\n    with open(")
    result = subprocess.run(
        [sys.executable, "-c", failing, str(tmp_path)], capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert b"workers failed: gateway-worker-0, gateway-worker-1, gateway-worker-2" in result.stderr


class Worker:
    """A worker process as `_Supervisor.watch` sees one: `alive` is what `is_alive` answers,
    call after call (then False: exited with `exitcode`); its sentinel is readable from the
    start, as a dying process's is once the kernel has closed its descriptors."""

    name = "gateway-worker-0"
    pid = 0

    def __init__(self, alive: list[bool], exitcode: int) -> None:
        read, write = os.pipe()
        os.close(write)
        self.sentinel = read
        self.exitcode: int | None = None
        self._alive = alive
        self._exitcode = exitcode

    def is_alive(self) -> bool:
        alive = self._alive.pop(0) if self._alive else False
        if not alive:
            self.exitcode = self._exitcode
        return alive

    def join(self) -> None:
        os.close(self.sentinel)


class Supervisor(workers._Supervisor):
    """Starts stand-ins that end at once (cleanly), recording the slots it starts."""

    started: list[int]

    def start(self, slot: int) -> None:
        self.started.append(slot)
        self.processes[slot] = Worker([], 0)  # type: ignore[assignment]


def test_a_worker_reaped_between_two_looks_is_still_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Killed while the supervisor looked: alive at its first look, already reaped by the next.
    monkeypatch.setattr(workers, "_FIRST_DELAY", 0.01)
    with socket.socket() as rest_socket:
        serving: Any = [1]
        shared = workers.Shared(rest_socket, 0, "", serving, 0)
        supervisor = Supervisor(None, lambda shared: None, shared)
        supervisor.started = []
        supervisor.processes[0] = Worker([True], -signal.SIGKILL)  # type: ignore[assignment]
        supervisor.watch()
    assert supervisor.started == [0]
    assert serving == [0]  # not serving until the replacement says so
