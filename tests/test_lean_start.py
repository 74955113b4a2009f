"""`gateway serve` starts small: what a request does not need is not imported.

The gateway runs as a real process with ``PYTHONPROFILEIMPORTTIME=1``, so its stderr names
every module it imports, at start and later. Before a CloudEvent arrives, the output must not
name pandas, CloudEvents, the OpenTelemetry SDK (tracing is off), the demo, the trace CLI or
the graph engine (no ``--graph``), nor numpy until a request is decoded; after one, CloudEvents
must be there (which shows the check can see a late import).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"listening: REST on (\d+), gRPC on (\w+)")
_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)
NOT_AT_START = (
    "pandas",
    "cloudevents",
    "opentelemetry.sdk",
    "gateway.demo",
    "gateway.trace_cli",
    "gateway.graph",
    "yaml",
    "numpy",
)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # closed again: nothing answers there


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for(predicate: object, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} in {timeout:g} s:\n{log.read_text()[-3000:]}")


def _imported(text: str) -> set[str]:
    return set(_IMPORT.findall(text))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in NOT_AT_START))


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_serve_imports_only_what_requests_need(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"PYTHONPROFILEIMPORTTIME": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "gateway", "serve", "--model_name", "m"]
    argv += ["--predictor_host", f"127.0.0.1:{_dead_port()}", "--predictor_protocol", "v1"]
    argv += ["--http_port", "0", "--grpc_port", "0", "--listen_address", "127.0.0.1"]
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for(lambda: _LISTENING.search(log.read_text()), "listening line", log)
        match = _LISTENING.search(log.read_text())
        assert match is not None
        base = f"http://127.0.0.1:{match.group(1)}"
        _wait_for(lambda: _ready(base + "/v2/health/ready"), "readiness", log)
        # Requests that go the whole way (the predictor is gone: 502/503). A v1 body passes
        # through as it is: nothing to decode, no numpy.
        v1 = json.dumps({"instances": [[1, 2]]}).encode()
        json_headers = {"Content-Type": "application/json"}
        assert _post(f"{base}/v1/models/m:predict", v1, json_headers) >= 500
        passed_through = _imported(log.read_text())
        assert "gateway.server.rest" in passed_through  # the check reads the import lines
        assert _heavy(passed_through) == []

        # A v2 body for this v1 predictor is decoded to be bridged: now numpy is needed.
        v2 = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
        assert _post(f"{base}/v2/models/m/infer", v2.encode(), json_headers) >= 500
        before = _imported(log.read_text())
        numpy = {m for m in before if m.split(".")[0] == "numpy"}
        assert numpy  # (imported in a thread, whose import lines leave out "numpy" itself)
        assert _heavy(before - numpy) == []

        event = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "t", "ce-type": "t"}
        assert _post(f"{base}/v1/models/m:predict", v1, json_headers | event) >= 500
        after = _imported(log.read_text())
        assert "cloudevents" in after
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
