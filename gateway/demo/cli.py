"""``gateway demo``: start the six-process topology (a transformer chain and an inference
graph), send it requests over every protocol,
print where the time went, and stop everything.

Exit codes: 0 when every request was answered right, 1 when some were not (or the demo
could not start), 128 + the signal number when interrupted (130 for Ctrl-C); the children
are stopped in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.demo import load, report
from gateway.demo.topology import MODEL, DemoError, Topology
from gateway.flag_types import at_least

__all__ = ["add_parser", "run"]

# Traces each process keeps beyond the requests measured: the warm-up ones, and spare room.
_TRACE_HEADROOM = 64
# A process keeps at most this many traces: the report then covers the last ones.
_MAX_TRACE_BUFFER = 5000


class _Signals:
    """While installed, SIGTERM and SIGHUP stop the demo as Ctrl-C does; `last` is the
    signal that did, for the exit code."""

    def __init__(self) -> None:
        self.last = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._as_ctrl_c)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)

    def _as_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        self.last = signal.Signals(signum)
        # Whatever handles Ctrl-C now: asyncio.run's cancels the load and lets it close its
        # connections; outside it, Python's raises KeyboardInterrupt.
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run(args: argparse.Namespace) -> int:
    with _Signals() as signals:
        return _run(args, signals)


def _run(args: argparse.Namespace, signals: _Signals) -> int:
    log_dir = new_log_dir()
    kinds = load.schedule(args.requests)
    buffer = min(len(kinds) + _TRACE_HEADROOM, _MAX_TRACE_BUFFER)
    topology = Topology(log_dir, trace_buffer=buffer)
    try:
        print(f"gateway demo: starting 6 processes (logs in {log_dir})", file=sys.stderr)
        topology.start()
        result = asyncio.run(_load(topology, kinds, args))
        traces = report.collect(topology.children, since_ns=result.started_ns)
        report.print_report(result, traces, topology.children, log_dir)
        if args.keep:
            _serve_until_interrupted()
        return 0 if result.error_count == 0 else 1
    except KeyboardInterrupt:
        print("\ngateway demo: interrupted; stopping its processes", file=sys.stderr)
        return 128 + signals.last
    except DemoError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave children behind
        # (the handlers come back when `run` leaves its `_Signals`).
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        topology.stop()


_LOG_PREFIX = "gateway-demo-"
_OWNER = "demo.pid"


def new_log_dir(base: Path | None = None) -> Path:
    """A folder for this run's logs and HTML (the report points at them). The folders of
    runs that have finished go: the temporary directory keeps only the last run's."""
    base = Path(tempfile.gettempdir()) if base is None else base
    for old in base.glob(f"{_LOG_PREFIX}*"):
        _remove_if_finished(old)
    path = Path(tempfile.mkdtemp(prefix=_LOG_PREFIX, dir=base))
    (path / _OWNER).write_text(str(os.getpid()))
    return path


def _remove_if_finished(folder: Path) -> None:
    try:
        pid = int((folder / _OWNER).read_text())
    except (OSError, ValueError):
        return  # not a folder this code made: not ours to remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        shutil.rmtree(folder, ignore_errors=True)
    except PermissionError:
        pass  # another user's demo, running


def _serve_until_interrupted() -> None:
    print("\nthe processes keep serving; Ctrl-C stops them", file=sys.stderr, flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass  # how a kept demo is meant to end: not an interruption


async def _load(topology: Topology, kinds: list[str], args: argparse.Namespace) -> load.LoadResult:
    a, graph = topology.children["A"], topology.children["G"]
    client = load.Client(a.url, f"127.0.0.1:{a.grpc_port}", MODEL, args.batch, graph.url)
    try:
        return await load.run_load(client, kinds, args.concurrency)
    finally:
        await client.aclose()


def add_parser(commands: Any) -> None:
    """Add the ``demo`` command to the CLI's subcommands."""
    demo = commands.add_parser(
        "demo",
        help="run a gateway chain and an inference graph locally, load them and show latency",
        description="Start a transformer chain (A -> B -> predictor, A -> explainer) and an "
        "inference graph (G: a Switch on a request field in front of an Ensemble of two "
        "classifiers) as local processes, send them requests over REST v2 JSON and binary, "
        "gRPC and v1 :explain, print the latency of each stage, hop, node and step from their "
        "traces, and stop them. Exit codes: 0 all answered right, 1 not, 130 on Ctrl-C.",
    )
    demo.add_argument(
        "--requests",
        type=at_least(1),
        default=200,
        help="predictions to send to A; the graph gets one per three (default: %(default)s)",
    )
    demo.add_argument(
        "--concurrency",
        type=at_least(1),
        default=4,
        help="requests in flight (default: %(default)s)",
    )
    demo.add_argument(
        "--batch", type=at_least(1), default=4, help="flowers per request (default: %(default)s)"
    )
    demo.add_argument(
        "--keep", action="store_true", help="after the report, keep serving until Ctrl-C"
    )
    demo.set_defaults(run=run)
