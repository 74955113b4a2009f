"""`workers.run` (server.workers): N forked processes sharing what `serve` is given. A whole
server with workers is `tests/test_model_server.py`'s; this runs the fork in a child process
of its own, so the test process's threads are never forked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
