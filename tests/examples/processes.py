"""Real processes for the example and deployment tests: start them, wait until they answer,
stop them (and everything they started), with their output at hand when something fails."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "transformer"
STARTUP_TIMEOUT = 60.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        """Ask the process group to stop (without waiting: stop many at once)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)


def load_example(name: str) -> ModuleType:
    """Import ``examples/transformer/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def started(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Process]:
    """Run `argv` in its own process group; on exit SIGTERM the group, then SIGKILL."""
    log = log_dir / f"{name}.log"
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            list(argv), cwd=cwd, env=environ, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield Process(name, popen, log)
    finally:
        _stop(popen)


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children it started (MLServer's workers) live on.
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(timeout=5)


def status(url: str) -> int:
    """The HTTP status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_ready(process: Process, url: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until `url` answers 200, failing with the process's output if it never does."""
    deadline = time.monotonic() + timeout
    while status(url) != 200:
        if process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited ({process.popen.returncode}):\n{process.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{process.name} not ready at {url} in {timeout} s:\n{process.output()}")
        time.sleep(0.1)


def post_json(url: str, body: Any) -> tuple[int, Any]:
    """POST `body` as JSON; the status and the parsed answer (errors included)."""
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def mlserver_script() -> str:
    """MLServer's console script next to this interpreter (there is no `python -m mlserver`)."""
    script = Path(sys.executable).with_name("mlserver")
    if not script.exists():
        pytest.fail(f"MLServer is not installed next to {sys.executable} (the test extra has it)")
    return str(script)


def mlserver_env(http_port: int, grpc_port: int, metrics_port: int) -> dict[str, str]:
    """MLServer's settings as environment variables, on 127.0.0.1."""
    return {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
        # The model in the server's own process: a second or two quicker to start.
        "MLSERVER_PARALLEL_WORKERS": "0",
    }
