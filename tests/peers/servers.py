"""Third-party servers for the exactness tests, each a real process on 127.0.0.1 serving an
identity model called `MODEL`: KServe's own `ModelServer` (from its own virtual environment)
and MLServer (a test dependency)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.examples.processes import Process, mlserver_env, mlserver_script, started, wait_ready
from tests.hops.upstreams import free_port

MODEL = "m"
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Peer:
    name: str
    process: Process
    http_port: int
    grpc_port: int

    def address(self, protocol: str) -> str:
        """``127.0.0.1:port`` for a hop speaking `protocol` (v2 or grpc-v2)."""
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc-v2' else self.http_port}"

    def wait_serving(self) -> None:
        """Until the model answers ready over REST and the gRPC port serves."""
        wait_ready(self.process, f"http://127.0.0.1:{self.http_port}/v2/models/{MODEL}/ready")
        # A hop that met a closed gRPC port would wait out grpc's reconnect backoff.
        with grpc.insecure_channel(self.address("grpc-v2")) as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_TIMEOUT)


@contextmanager
def kserve_echo(python: Path, log_dir: Path) -> Iterator[Peer]:
    """`tests/peers/kserve_echo.py` run by KServe's interpreter `python`."""
    # KServe does not log the port it bound for a port 0: choose them.
    http_port, grpc_port = free_port(), free_port()
    argv = [str(python), "-m", "tests.peers.kserve_echo", "--model_name", MODEL,
            "--http_port", str(http_port), "--grpc_port", str(grpc_port)]  # fmt: skip
    with started("kserve", argv, log_dir) as process:
        yield Peer("kserve", process, http_port, grpc_port)


@contextmanager
def mlserver_echo(directory: Path) -> Iterator[Peer]:
    """MLServer serving `tests/peers/mlserver_echo.py` from the model folder `directory`."""
    settings = {"name": MODEL, "implementation": "tests.peers.mlserver_echo.Echo"}
    (directory / "model-settings.json").write_text(json.dumps(settings))
    http_port, grpc_port = free_port(), free_port()
    env = mlserver_env(http_port, grpc_port, free_port())
    with started(
        "mlserver", [mlserver_script(), "start", str(directory)], directory, env
    ) as process:
        yield Peer("mlserver", process, http_port, grpc_port)
