"""Server benchmark: our ModelServer against KServe's, serving the same echo model.

Each server runs as its own process pinned to one CPU; the load runs in another process pinned
to the other CPU, with 16 requests in flight on loopback, for a warm-up and then a measured
window per payload: REST v1 (small JSON instances), REST v2 JSON (small), REST v2 with the
binary extension (a 1 MiB FP32 tensor in, binary out) and gRPC ModelInfer with
raw_input_contents (1 MiB FP32). KServe is installed on first run into its own virtual
environment (bench/.venv-kserve), never into ours. Run from the repo root:

    python bench/server.py                   # both servers, 1 s warm-up + 5 s per cell
    python bench/server.py --duration 10     # longer cells
    python bench/server.py --skip-kserve     # our server only
    python bench/server.py --quick           # our server only, 0.5 s cells (a smoke test)

A benchmark, not a test: it exits 0 whether or not the targets are met (each is printed as
PASS or FAIL); it exits 1 only when our server cannot be measured (it did not start, answered
wrongly, or failed requests).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Run as a script, Python puts bench/ first on sys.path, where a benchmark module named like a
# library (bench/codecs.py) would shadow it; benchmark this checkout instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from bench import harness  # noqa: E402
from bench.harness import Load, Result, Server  # noqa: E402
from bench.models import MODEL_NAME  # noqa: E402

OURS, KSERVE = "gateway", "kserve"

CPU_TARGET = 0.5  # our server CPU per request, at most this share of KServe's ...
P99_TARGET = 1.0  # ... and our p99 latency at most this multiple of KServe's
LOAD_BOUND = 0.9  # a load process this busy (and a server less so) limits the figures
STEAL_NOTE = 0.05  # hypervisor steal worth a note (a share of one CPU)

LEGEND = """
- server CPU/req: the server process's user + system CPU time (/proc/<pid>/stat, all its
  threads) over the window, per request answered. faults/req: its minor page faults per
  request (pages touched for the first time; each costs system time).
- server / load / other CPU: busy share of one CPU over the window, of the server process, of
  the load process, and of the rest of the machine (other processes, kernel network work
  charged to neither). load-bound: the load process, not the server, was the limit. A high
  other CPU means something else was running and the figures are disturbed; steal: CPU time
  the hypervisor of this virtual machine gave to someone else (also disturbing)."""

TENSOR = "input-0"
MIB = 1 << 20


@dataclass(frozen=True)
class Payload:
    """One kind of request: its body, built once, and how to check an echo of it."""

    name: str
    kind: Literal["http", "grpc"]
    path: str  # the URL path for REST; gRPC calls ModelInfer
    body: bytes
    headers: dict[str, str]
    checker: harness.Check

    def target(self, server: Server) -> str:
        return server.base_url + self.path if self.kind == "http" else server.grpc_target

    def check(self, server: Server) -> None:
        """Raise AssertionError unless `server` echoes this payload back."""
        self.checker(self.target(server), self.body, self.headers)


def payloads() -> list[Payload]:
    # Values exact in FP32, so a JSON echo compares equal.
    small = [i / 4 for i in range(16)]
    big = np.random.default_rng(0).standard_normal(MIB // 4, dtype=np.float32)
    raw, shape = big.tobytes(), [1, big.size]
    binary_body, binary_headers = harness.v2_binary_body(TENSOR, shape, raw)
    infer = f"/v2/models/{MODEL_NAME}/infer"
    return [
        Payload(
            "REST v1 JSON",
            "http",
            f"/v1/models/{MODEL_NAME}:predict",
            harness.v1_body([small[i : i + 4] for i in range(0, 16, 4)]),
            harness.JSON_HEADERS,
            harness.check_v1_echo,
        ),
        Payload(
            "REST v2 JSON",
            "http",
            infer,
            harness.v2_json_body(TENSOR, [1, len(small)], small),
            harness.JSON_HEADERS,
            harness.check_v2_json_echo,
        ),
        Payload(
            "REST v2 binary 1 MiB",
            "http",
            infer,
            binary_body,
            binary_headers,
            harness.check_v2_binary_echo,
        ),
        Payload(
            "gRPC raw 1 MiB",
            "grpc",
            "",
            harness.grpc_infer_body(MODEL_NAME, TENSOR, shape, raw),
            {},
            harness.check_grpc_echo,
        ),
    ]


@dataclass(frozen=True)
class Cell:
    server: str
    payload: str
    result: Result | None
    error: str | None = None  # why there is no result, or what failed during it


ServerFactory = Callable[[frozenset[int]], AbstractContextManager[Server]]


def our_server(python: str, env: dict[str, str], nice: int = 0) -> ServerFactory:
    def start(cpus: frozenset[int]) -> AbstractContextManager[Server]:
        argv = [python, "-m", "bench.models", "--sdk", OURS, "--http_port", "0"]
        argv += ["--grpc_port", "0", "--listen_address", harness.LOCALHOST]
        return harness.spawn(OURS, argv, cpus=cpus, env=env, nice=nice)

    return start


def kserve_server(python: Path, env: dict[str, str], nice: int = 0) -> ServerFactory:
    def start(cpus: frozenset[int]) -> AbstractContextManager[Server]:
        # KServe binds 0.0.0.0 / [::] and does not log a port 0 it was given: choose them.
        http_port, grpc_port = harness.free_port(), harness.free_port()
        argv = [str(python), "-m", "bench.models", "--sdk", KSERVE]
        argv += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        return harness.spawn(
            KSERVE,
            argv,
            cpus=cpus,
            http_port=http_port,
            grpc_port=grpc_port,
            listening=None,
            env=env,
            nice=nice,
        )

    return start


def run_server(
    name: str,
    start: ServerFactory,
    cases: Sequence[Payload],
    args: argparse.Namespace,
    cpus: tuple[frozenset[int], frozenset[int]],
) -> list[Cell]:
    """Start one server, check then measure every payload on it, stop it."""
    server_cpus, load_cpus = cpus
    cells = []
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start(server_cpus))
        except (RuntimeError, OSError) as exc:
            _progress(f"{name} did not start: {exc}")
            return [Cell(name, case.name, None, "did not start") for case in cases]
        for case in cases:
            try:
                case.check(server)
            except Exception as exc:
                cells.append(Cell(name, case.name, None, f"wrong answer: {exc}"))
                _progress(f"{name} / {case.name}: wrong answer: {exc}")
                continue
            _progress(f"{name} / {case.name} ...")
            load = Load(
                kind=case.kind,
                target=case.target(server),
                body=case.body,
                headers=case.headers,
                concurrency=args.concurrency,
                warmup=args.warmup,
                duration=args.duration,
                server_pid=server.pid,
                cpus=load_cpus,
                nice=args.nice,
            )
            try:
                result = harness.measure(load)
            except RuntimeError as exc:
                cells.append(Cell(name, case.name, None, "the load process failed"))
                _progress(f"{name} / {case.name}: {exc}")
                continue
            error = None
            if result.errors:
                error = f"{result.errors} failed requests, first: {result.first_error}"
            cells.append(Cell(name, case.name, result, error))
    return cells


def results_table(cells: Sequence[Cell]) -> str:
    header = [
        "server",
        "payload",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU/req ms",
        "faults/req",
        "server CPU",
        "load CPU",
        "other CPU",
        "note",
    ]
    rows = []
    for cell in cells:
        result = cell.result
        if result is None:
            rows.append([cell.server, cell.payload, *["-"] * 8, cell.error or ""])
            continue
        note = cell.error or ""
        server_util, faults = result.server_util, result.faults_per_request
        if result.client_util > LOAD_BOUND and (server_util or 0.0) < LOAD_BOUND:
            note = note or "load-bound"
        if result.steal_util > STEAL_NOTE:
            note = f"{note}, " if note else ""
            note += f"steal {result.steal_util:.0%}"
        rows.append(
            [
                cell.server,
                cell.payload,
                f"{result.rps:,.0f}",
                harness.ms(result.p50),
                harness.ms(result.p99),
                harness.ms(result.cpu_per_request, 3),
                "-" if faults is None else f"{faults:,.0f}",
                "-" if server_util is None else f"{server_util:.0%}",
                f"{result.client_util:.0%}",
                f"{max(0.0, result.other_util):.0%}",  # a tick of rounding can go below 0
                note,
            ]
        )
    return harness.markdown_table(header, rows, frozenset({2, 3, 4, 5, 6, 7, 8, 9}))


def comparison(cells: Sequence[Cell], cases: Sequence[Payload]) -> tuple[str, list[str]]:
    """The ours-vs-KServe table, and a line per target missed (or not measurable)."""
    by_key = {(cell.server, cell.payload): cell for cell in cells}
    header = [
        "payload",
        "CPU/req ours : KServe",
        f"target <= {CPU_TARGET:.2f}",
        "p99 ours : KServe",
        f"target <= {P99_TARGET:.2f}",
    ]
    rows, misses = [], []
    for case in cases:
        ours, theirs = by_key.get((OURS, case.name)), by_key.get((KSERVE, case.name))
        cpu_ratio = p99_ratio = None
        if ours and theirs and ours.result and theirs.result and not ours.error:
            our_cpu, their_cpu = ours.result.cpu_per_request, theirs.result.cpu_per_request
            if our_cpu is not None and their_cpu:
                cpu_ratio = our_cpu / their_cpu
            if theirs.result.p99 > 0:
                p99_ratio = ours.result.p99 / theirs.result.p99
        cpu_ok = None if cpu_ratio is None else cpu_ratio <= CPU_TARGET
        p99_ok = None if p99_ratio is None else p99_ratio <= P99_TARGET
        for label, ok in (("CPU per request", cpu_ok), ("p99", p99_ok)):
            if not ok:
                misses.append(f"  {'FAIL' if ok is False else 'n/a '} {case.name}: {label}")
        rows.append(
            [
                case.name,
                _ratio_text(ours, theirs, "cpu", cpu_ratio),
                harness.verdict(cpu_ok),
                _ratio_text(ours, theirs, "p99", p99_ratio),
                harness.verdict(p99_ok),
            ]
        )
    return harness.markdown_table(header, rows, frozenset({1, 3})), misses


def _ratio_text(ours: Cell | None, theirs: Cell | None, what: str, ratio: float | None) -> str:
    if ratio is None or ours is None or theirs is None or not (ours.result and theirs.result):
        return "-"
    if what == "cpu":
        a, b = ours.result.cpu_per_request, theirs.result.cpu_per_request
        return f"{harness.ms(a, 3)} : {harness.ms(b, 3)} ms = {ratio:.2f}"
    a, b = ours.result.p99, theirs.result.p99
    return f"{harness.ms(a)} : {harness.ms(b)} ms = {ratio:.2f}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    harness.add_run_options(parser, "every server")
    parser.add_argument("--skip-kserve", action="store_true", help="measure our server only")
    parser.add_argument(
        "--quick", action="store_true", help="our server only, 0.5 s cells (a smoke test)"
    )
    harness.add_kserve_options(parser)
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the server and load processes; on a busy shared machine a negative "
        "value (root only) keeps other work off the measured CPUs",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for both servers (repeatable), e.g. "
        "MALLOC_MMAP_THRESHOLD_=33554432",
    )
    parser.add_argument(
        "--gateway-python", default=sys.executable, help="the interpreter that runs our server"
    )
    args = parser.parse_args(argv)
    env = {}
    for item in args.server_env:
        name, equals, value = item.partition("=")
        if not equals or not name:
            parser.error(f"--server-env takes NAME=VALUE, not {item!r}")
        env[name] = value
    if args.quick:
        args.skip_kserve = True
    args.duration = args.duration or (0.5 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 1.0)

    cases = payloads()
    cpus = harness.cpu_split()
    # This process only waits: keep it off the server's CPU too.
    os.sched_setaffinity(0, cpus[1])
    servers: list[tuple[str, ServerFactory, str]] = [
        (OURS, our_server(args.gateway_python, env, args.nice), args.gateway_python)
    ]
    notes = []
    if not args.skip_kserve:
        python = harness.kserve_python(args)
        if isinstance(python, Path):
            servers.append((KSERVE, kserve_server(python, env, args.nice), str(python)))
        else:
            notes.append(python)

    started = time.perf_counter()
    print(f"# Server benchmark: {os.cpu_count()} CPUs, server on CPU {sorted(cpus[0])}, "
          f"load on CPU {sorted(cpus[1])}, {args.concurrency} in flight, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s per cell"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}"
          f"{f', nice {args.nice}' if args.nice else ''}\n")  # fmt: skip
    modules = ["aiohttp", "grpcio", "protobuf", "uvloop", "orjson", "numpy"]
    for name, _, python_path in servers:
        extra = ["kserve", "fastapi", "uvicorn"] if name == KSERVE else []
        print(f"- {name}: {harness.python_info(python_path, [*extra, *modules])}")
    print(f"- load: {harness.python_info(sys.executable, ['aiohttp', 'grpcio'])}")
    print(f"- checkout: {harness.checkout()}")
    if env:
        print(f"- server environment: {' '.join(f'{k}={v}' for k, v in env.items())}")
    print()
    rounds: list[list[Cell]] = []
    for number in range(args.rounds):
        if args.rounds > 1:
            _progress(f"round {number + 1} of {args.rounds}")
        rounds.append([])
        for name, start, _ in servers:
            rounds[-1] += run_server(name, start, cases, args, cpus)
    cells = harness.median_cells(rounds)

    print(results_table(cells))
    print(LEGEND)
    for note in notes:
        print(f"\n{note}")
    exit_code = 0
    our_cells = [cell for cell in cells if cell.server == OURS]
    if any(cell.error or cell.result is None for cell in our_cells):
        exit_code = 1
        print("\nour server could not be measured on every payload (see the note column)")
    if any(name == KSERVE for name, _, _ in servers):
        table, misses = comparison(cells, cases)
        print(f"\n## ours vs KServe\n\n{table}\n")
        judged = 2 * len(cases)
        print(f"targets: {judged - len(misses)} pass, {len(misses)} fail or not measured")
        for miss in misses:
            print(miss)
    print(f"\nRan {time.perf_counter() - started:.0f} s.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
