"""The demo's processes: the services of the docker-compose file, each a ``gateway serve``
child process on free ports of 127.0.0.1.

    client --REST v2 / gRPC--> A (iris transformer) --REST v2--> B (identity) --gRPC--> predictor
                               A --REST v1 :explain--> explainer
    client --REST v2--> G (inference graph: Switch on a request field)
                          |-> predictor (gRPC), or, asked for an ensemble, at once:
                          |-> predictor (gRPC) and centroids (a second classifier, REST v2)

Ports are chosen by the kernel (port 0) and read from each child's ``listening:`` log line,
so two demos never collide. Each child runs in a session of its own: a Ctrl-C in the
terminal reaches the demo only, which then stops its children in order (`Topology.stop`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import gateway
from gateway.demo import graph

__all__ = ["GRAPH_SERVICE", "MODEL", "Child", "DemoError", "Service", "Topology"]

MODEL = "iris"
_LISTENING = re.compile(r"listening: REST on (\d+), gRPC on (\w+)")
# A child that has not listened by then is stuck (a cold start takes a second or two).
STARTUP_TIMEOUT = 60.0
# Children drain for this long on SIGTERM; the demo has nothing in flight by then.
GRACE_PERIOD = 2.0
_MODELS = "gateway.demo.models"
# The service name of the graph's gateway (its spans carry it).
GRAPH_SERVICE = "graph"


class DemoError(Exception):
    """The demo cannot go on (a child failed to start, a request kind fails outright)."""


@dataclass(frozen=True)
class Service:
    """One process of the topology: its short label (the report's row prefix), the service
    name its spans carry, and its ``gateway serve`` flags."""

    label: str
    service_name: str
    flags: tuple[str, ...]


@dataclass
class Child:
    """A started service: its process, ports and log."""

    service: Service
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    grpc_port: int | None = None
    listening: threading.Event = field(default_factory=threading.Event)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def describe(self) -> str:
        grpc_port = f", gRPC 127.0.0.1:{self.grpc_port}" if self.grpc_port else ""
        return (
            f"started {self.service.label:<9} ({self.service.service_name}): "
            f"pid {self.process.pid}, REST 127.0.0.1:{self.http_port}{grpc_port}"
        )


def predictors_and_explainer() -> list[Service]:
    return [
        Service("predictor", "predictor", ("--transformer", f"{_MODELS}:IrisClassifier")),
        Service("centroids", "centroids", ("--transformer", f"{_MODELS}:IrisCentroids")),
        Service(
            "explainer",
            "explainer",
            ("--transformer", f"{_MODELS}:IrisExplainer", "--enable_grpc", "false"),
        ),
    ]


def transformer_b(predictor: Child) -> Service:
    upstream = f"127.0.0.1:{predictor.grpc_port}"
    return Service(
        "B",
        "transformer-b",
        ("--predictor_host", upstream, "--predictor_protocol", "grpc-v2"),
    )


def graph_gateway(predictor: Child, centroids: Child, graph_file: Path) -> Service:
    """The inference graph, behind a transformer that standardizes what the client sends and
    averages what the classifiers answer."""
    return Service(
        "G",
        GRAPH_SERVICE,
        (
            *("--graph", str(graph_file)),
            *("--transformer", f"{_MODELS}:IrisGraphTransformer"),
            *("--service", f"logistic=grpc://127.0.0.1:{predictor.grpc_port}/{MODEL}"),
            *(
                "--service",
                f"centroids=http://127.0.0.1:{centroids.http_port}/v2/models/{MODEL}/infer",
            ),
        ),
    )


def transformer_a(b: Child, explainer: Child) -> Service:
    return Service(
        "A",
        "transformer-a",
        (
            "--transformer",
            f"{_MODELS}:IrisTransformer",
            "--predictor_host",
            f"127.0.0.1:{b.http_port}",
            "--predictor_protocol",
            "v2",
            # Both ends are ours: tensors travel as binary, whatever the client sent A.
            "--predictor_rest_format",
            "binary",
            "--explainer_host",
            f"127.0.0.1:{explainer.http_port}",
        ),
    )


class Topology:
    """Starts the services, knows their ports and pids, and stops them all."""

    def __init__(self, log_dir: Path, trace_buffer: int, report: IO[str] = sys.stderr) -> None:
        self.log_dir = log_dir
        self.trace_buffer = trace_buffer
        self.children: dict[str, Child] = {}
        self._report = report

    def start(self) -> None:
        """Start the services, upstreams first, and wait until each is ready."""
        predictor, centroids, explainer = self._start_wave(predictors_and_explainer())
        graph_file = graph.write(self.log_dir)
        b, _ = self._start_wave(
            [transformer_b(predictor), graph_gateway(predictor, centroids, graph_file)]
        )
        self._start_wave([transformer_a(b, explainer)])

    def pids(self) -> list[int]:
        return [child.process.pid for child in self.children.values()]

    def stop(self) -> None:
        """SIGTERM every child (and anything it started), wait for the drain, then SIGKILL
        what is left. Safe to call twice, and with children that already exited."""
        for child in self.children.values():
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_PERIOD + 5
        for child in self.children.values():
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()

    def _start_wave(self, wave: list[Service]) -> list[Child]:
        # Started together, waited for together: the services of a wave need only what
        # earlier waves started.
        started = [self._spawn(service) for service in wave]
        for child in started:
            self._wait_listening(child)
        for child in started:
            self._wait_ready(child)
            print(child.describe(), file=self._report, flush=True)
        return started

    def _spawn(self, service: Service) -> Child:
        # The children import this very gateway package, installed or not.
        source = str(Path(gateway.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": source if not path else f"{source}{os.pathsep}{path}",
            "OTEL_SERVICE_NAME": service.service_name,
        }
        command = [
            *(sys.executable, "-m", "gateway", "serve", "--model_name", MODEL),
            *("--listen_address", "127.0.0.1", "--http_port", "0", "--grpc_port", "0"),
            *("--trace_buffer", str(self.trace_buffer), "--grace_period", str(GRACE_PERIOD)),
            *service.flags,
        ]
        log_path = self.log_dir / f"{service.service_name}.log"
        # A Ctrl-C between the fork and the line below would leave a child no one stops.
        with stop_signals_deferred():
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            child = Child(service, process, log_path)
            self.children[service.label] = child
        threading.Thread(target=_pump, args=(child,), daemon=True).start()
        return child

    def _wait_listening(self, child: Child) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not child.listening.wait(0.1):
            if child.process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(_failure(child, "did not start"))

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _ready(f"{child.url}/v2/models/{MODEL}/ready"):
            if child.process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(_failure(child, "did not become ready"))
            time.sleep(0.05)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back from Python's handlers until the block ends, then
    deliver the first that came to the handler in place. Blocking them in the kernel instead
    would hand the block to the children, which keep the mask through exec and would not stop."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread only: nothing to hold back here
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    held = [sig for sig, handler in previous.items() if handler is not None]
    for sig in held:
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, previous[sig])
        if caught:
            signal.raise_signal(caught[0])


def _pump(child: Child) -> None:
    """Copy the child's output to its log file, spotting the line with its ports."""
    stream = child.process.stdout
    assert stream is not None
    with stream, child.log_path.open("wb") as log:
        for raw in stream:
            log.write(raw)
            log.flush()
            line = raw.decode(errors="replace")
            child.tail.append(line)
            found = _LISTENING.search(line)
            if found and not child.listening.is_set():
                child.http_port = int(found.group(1))
                port = found.group(2)
                child.grpc_port = int(port) if port.isdigit() else None
                child.listening.set()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _failure(child: Child, what: str) -> str:
    code = child.process.poll()
    status = f" (exit code {code})" if code is not None else ""
    output = "".join(child.tail).rstrip() or "(no output)"
    return f"{child.service.label} {what}{status}; its last lines:\n{output}"


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is not None:
        return
    # The child leads its own process group (start_new_session): signal all of it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
