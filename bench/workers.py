"""Workers benchmark: our gateway with ``--workers 1`` and ``--workers 2`` in front of the
same predictor, requests/s and CPU per request (all its processes), in one run.

The gateway (identity transformer, pass-through, tracing off) and the predictor and load of
`bench/hops.py` all run unpinned here: a second worker can only help when it has a CPU to
run on, and on a machine of two that CPU is shared with the predictor and the load, as it is
on a node that runs the gateway beside other work. REST payloads only: the load's REST
connections spread over the workers (they accept on one shared socket), while one gRPC
channel is one connection, which SO_REUSEPORT hands to a single worker. Run from the repo
root:

    python bench/workers.py                  # workers 1 and 2, 1 s warm-up + 5 s per cell
    python bench/workers.py --rounds 3       # median of 3, taking turns
    python bench/workers.py --quick          # 0.5 s cells (a smoke test)

A benchmark, not a test: it exits 0 unless our gateway could not be measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench import harness, hops  # noqa: E402
from bench.harness import Load, Result  # noqa: E402

WORKERS = (1, 2)
PAYLOADS = ("v2-json", "v2-json-16k")  # REST v2, passed through to a v2 predictor


@dataclass(frozen=True)
class Cell:
    workers: int
    payload: str
    result: Result | None
    error: str | None = None

    @property
    def cpu_per_request(self) -> float | None:
        """CPU seconds per request of the parent and every worker."""
        result = self.result
        if result is None or result.server_cpu is None or not result.requests:
            return None
        return (result.server_cpu + sum(result.watched_cpu)) / result.requests


def _children(pid: int) -> tuple[int, ...]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return tuple(found)


def run_gateway(
    workers: int, cases: Sequence[hops.Payload], predictor: harness.Server, args: argparse.Namespace
) -> list[Cell]:
    python = sys.executable
    argv = [python, "-m", "gateway", "serve", "--model_name", hops.MODEL_NAME]
    argv += ["--predictor_host", f"{harness.LOCALHOST}:{predictor.http_port}"]
    argv += ["--predictor_protocol", "v2", "--workers", str(workers)]
    argv += ["--http_port", "0", "--grpc_port", "0", "--listen_address", harness.LOCALHOST]
    cells = []
    try:
        with harness.spawn(f"gateway-workers-{workers}", argv, env=hops.NO_OTEL) as server:
            children = _children(server.pid) if workers > 1 else ()
            for case in cases:
                try:
                    case.check(server, "v2")
                except AssertionError as exc:
                    cells.append(Cell(workers, case.key, None, f"wrong answer: {exc}"))
                    continue
                load = Load(case.kind, case.target(server), case.body, case.headers,
                            concurrency=args.concurrency, warmup=args.warmup,
                            duration=args.duration, server_pid=server.pid,
                            watch_pids=children)  # fmt: skip
                print(f"workers {workers} / {case.name} ...", file=sys.stderr, flush=True)
                result = harness.measure(load)
                cells.append(Cell(workers, case.key, result, _errors(result)))
    except (RuntimeError, OSError) as exc:
        return [Cell(workers, case.key, None, f"did not start: {exc}") for case in cases]
    return cells


def _errors(result: Result) -> str | None:
    return f"{result.errors} failed requests" if result.errors else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    harness.add_run_options(parser, "each gateway")
    parser.add_argument("--quick", action="store_true", help="0.5 s cells (a smoke test)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (0.5 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    cases = [case for case in hops.payloads() if case.key in PAYLOADS]
    print(f"# Workers benchmark: {os.cpu_count()} CPUs, nothing pinned, {args.concurrency} in "
          f"flight, {args.warmup:g} s warm-up + {args.duration:g} s per cell"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}\n")  # fmt: skip
    print(f"- checkout: {harness.checkout()}\n")
    rounds: list[list[Cell]] = []
    with hops.predictor_server(sys.executable, frozenset(), 0) as predictor:
        for _ in range(args.rounds):
            rounds.append([c for n in WORKERS for c in run_gateway(n, cases, predictor, args)])
    cells = harness.median_cells(rounds)
    names = {case.key: case.name for case in cases}
    by_key = {(cell.workers, cell.payload): cell for cell in cells}
    rows = []
    for case in cases:
        one = by_key.get((1, case.key))
        for cell in (by_key.get((n, case.key)) for n in WORKERS):
            if cell is None:
                continue
            result = cell.result
            if result is None:
                rows.append(
                    [names[case.key], str(cell.workers), "-", "-", "-", "-", cell.error or ""]
                )
                continue
            cpu = cell.cpu_per_request
            gain = "-"
            if one is not None and one.result is not None and one.result.rps:
                gain = f"{result.rps / one.result.rps:.2f}"
            busy = (result.server_cpu or 0.0) + sum(result.watched_cpu)
            rows.append([names[case.key], str(cell.workers), f"{result.rps:,.0f}", gain,
                         harness.ms(cpu, 3), f"{busy / result.seconds:.0%}",
                         cell.error or ""])  # fmt: skip
    header = ["payload", "workers", "req/s", "req/s : 1 worker", "CPU/req ms (all processes)",
              "gateway CPU", "note"]  # fmt: skip
    print(harness.markdown_table(header, rows, frozenset({2, 3, 4, 5})))
    print("\ngateway CPU: the busy share of one CPU of the parent and every worker together.")
    failed = any(cell.result is None or cell.error for cell in cells)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
