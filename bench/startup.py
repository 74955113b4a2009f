"""Start-up benchmark: how soon our gateway answers and how much memory it holds at rest,
beside the minimal aiohttp / grpc.aio proxy of `bench/hops.py` (the floor), in one run.

For each process, each round: start it (in front of the echo predictor of `bench/models.py`),
poll ``GET /v2/health/ready`` on its REST port every few milliseconds and take the time from
the process's start to the first 200 (the floor has no readiness route: its first answer of
any status counts), then let it sit idle for a moment and read its resident memory (VmRSS
from ``/proc``). The gateway is ``python -m gateway serve`` with default flags, tracing off;
each is pinned to the first CPU, the predictor and this script to the others. Both run from
compiled bytecode, as an installed package does (pip compiles it at install; this script keeps
it in a temporary ``PYTHONPYCACHEPREFIX`` filled by one uncounted start of each, so
``PYTHONDONTWRITEBYTECODE`` in the caller's environment does not make every start compile
from source). Run from the repo root:

    python bench/startup.py                  # 5 rounds, median
    python bench/startup.py --rounds 9
    python bench/startup.py --quick          # 2 rounds (a smoke test)

A benchmark, not a test: it exits 0 whether or not the targets are met (each is printed as
PASS or FAIL); it exits 1 only when our gateway did not start.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench import harness, hops  # noqa: E402

RSS_TARGET_MIB = 60.0  # idle resident memory of our gateway, at most
READY_TARGET_S = 0.3  # from the process's start to 200 from /v2/health/ready, at most
IDLE_S = 1.0  # how long a ready process sits before its memory is read
READY_TIMEOUT_S = 30.0
POLL_S = 0.005


@dataclass(frozen=True)
class Start:
    seconds: float | None  # to ready; None: never answered
    rss_mib: float | None


def _answer(port: int) -> int | None:
    """The status of ``GET /v2/health/ready`` on `port`, or None while nothing answers."""
    request = b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((harness.LOCALHOST, port), timeout=1) as sock:
            sock.sendall(request)
            head = sock.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def start_once(
    argv: Sequence[str], port: int, any_status: bool, cpus: frozenset[int], bytecode: Path
) -> Start:
    """Start `argv` (listening on REST `port`), time it to ready, read its idle memory."""
    env = {**os.environ, **hops.NO_OTEL, "PYTHONPYCACHEPREFIX": str(bytecode)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            cwd=harness.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        server = harness.Server("startup", process, Path(os.devnull))
        try:
            seconds = None
            deadline = started + READY_TIMEOUT_S
            while time.perf_counter() < deadline and process.poll() is None:
                status = _answer(port)
                if status == 200 or (any_status and status is not None):
                    seconds = time.perf_counter() - started
                    break
                time.sleep(POLL_S)
            rss = None
            if seconds is not None:
                time.sleep(IDLE_S)
                rss = _rss_mib(process.pid)
            return Start(seconds, rss)
        finally:
            harness.stop(server)


def _gateway(python: str, upstreams: hops.Upstreams, port: int) -> list[str]:
    argv = [python, "-m", "gateway", "serve", "--model_name", hops.MODEL_NAME]
    argv += ["--predictor_host", upstreams.host("v2")]
    argv += ["--http_port", str(port), "--grpc_port", str(harness.free_port())]
    return [*argv, "--listen_address", harness.LOCALHOST]


def _floor(python: str, upstreams: hops.Upstreams, port: int) -> list[str]:
    argv = [python, "-m", "bench.hops", "--role", "floor"]
    argv += ["--rest-upstream", upstreams.predictor.base_url]
    argv += ["--grpc-upstream", upstreams.predictor.grpc_target]
    return [*argv, "--http-port", str(port), "--grpc-port", str(harness.free_port())]


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="starts of each process")
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke test)")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    python = sys.executable
    hop_cpus, load_cpus = harness.cpu_split()
    os.sched_setaffinity(0, load_cpus)
    print(f"# Start-up benchmark: {rounds} starts each, taking turns, process on CPU "
          f"{sorted(hop_cpus)}, idle {IDLE_S:g} s before reading memory\n")  # fmt: skip
    print(f"- {harness.python_info(python, ['aiohttp', 'grpcio', 'uvloop', 'numpy'])}")
    print(f"- checkout: {harness.checkout()}\n")
    starts: dict[str, list[Start]] = {"gateway": [], "floor": []}
    processes = (("gateway", _gateway, False), ("floor", _floor, True))
    with (
        hops.predictor_server(python, load_cpus, 0) as predictor,
        tempfile.TemporaryDirectory(prefix="bytecode-") as bytecode,
    ):
        upstreams = hops.Upstreams(predictor, None)
        for number in range(rounds + 1):
            print(f"round {number} of {rounds} (0: warm-up)", file=sys.stderr, flush=True)
            for name, build, any_status in processes:
                port = harness.free_port()
                argv = build(python, upstreams, port)
                start = start_once(argv, port, any_status, hop_cpus, Path(bytecode))
                if number:
                    starts[name].append(start)
    rows = []
    medians: dict[str, tuple[float | None, float | None]] = {}
    for name, runs in starts.items():
        ready = _median([run.seconds for run in runs])
        rss = _median([run.rss_mib for run in runs])
        medians[name] = (ready, rss)
        each = " ".join("-" if r.seconds is None else f"{r.seconds:.3f}" for r in runs)
        rows.append(
            [
                "our gateway" if name == "gateway" else "floor (minimal proxy)",
                "-" if ready is None else f"{ready:.3f}",
                each,
                "-" if rss is None else f"{rss:.1f}",
            ]
        )
    header = ["process", "ready s (median)", "ready s (each start)", "idle RSS MiB (median)"]
    print(harness.markdown_table(header, rows, frozenset({1, 3})))
    (ready, rss), (floor_ready, floor_rss) = medians["gateway"], medians["floor"]
    print()
    if ready is None or rss is None:
        print("our gateway did not start every time")
        return 1
    ready_note = rss_note = ""
    if floor_ready is not None:
        ready_note = f" (floor {floor_ready:.3f} s: ours {ready - floor_ready:+.3f} s)"
    if floor_rss is not None:
        rss_note = f" (floor {floor_rss:.1f} MiB: ours {rss - floor_rss:+.1f} MiB)"
    ok_ready, ok_rss = ready <= READY_TARGET_S, rss <= RSS_TARGET_MIB
    print(f"ready: {ready:.3f} s <= {READY_TARGET_S:g} s {harness.verdict(ok_ready)}{ready_note}")
    print(f"idle RSS: {rss:.1f} MiB <= {RSS_TARGET_MIB:g} MiB {harness.verdict(ok_rss)}{rss_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
