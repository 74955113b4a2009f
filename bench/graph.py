"""Graph benchmark: what a step of an inference graph costs the gateway, against the same
upstream called through a plain hop, and a Sequence of two steps against the same two calls
made one after the other by a transformer, in one run.

One predictor (our ModelServer serving the echo model of bench/models.py) answers every row.
In front of it, one at a time, each a ``python -m gateway serve`` process on the first CPU
(the predictor and the load share the second), tracing off:

- ``hop``: the identity transformer, ``--predictor_host``: the body passes through undecoded;
- ``hop-decoded``: a transformer whose ``predict`` forwards to its hop (`Forward`): the
  request is decoded and the answer encoded, as a graph step must (a graph reads requests);
- ``graph-1``: ``--graph``, a Sequence of one step to the same upstream;
- ``twice``: a transformer whose ``predict`` calls its hop twice, the second time with the
  first answer as the request (`Twice`): two calls one after the other, no graph;
- ``graph-2``: ``--graph``, a Sequence of two steps, the second taking the first's
  ``$response``.

Each row is checked to echo before it is timed. Per row: requests/s, p50 / p99 latency at
16 in flight, and the gateway process's CPU time per request (``/proc/<pid>/stat``, all its
threads). The ratios that answer the question: graph-1 : hop-decoded (the graph's own
work for one step), graph-1 : hop (a graph step against the plain hop as it runs by
default), graph-2 : twice. Run from the repo root:

    python bench/graph.py                  # 1 s warm-up + 5 s per cell
    python bench/graph.py --rounds 3       # each process three times, taking turns; median
    python bench/graph.py --quick          # REST v2 JSON small only, 0.5 s cells (a smoke test)

A benchmark, not a test: it exits 0 unless a graph row could not be measured (it did not
start, answered wrongly, or failed requests).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Run as a script, Python puts bench/ first on sys.path, where a benchmark module named like a
# library (bench/codecs.py) would shadow it; benchmark this checkout instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench import harness  # noqa: E402
from bench.harness import Load, Result, Server  # noqa: E402
from gateway.graph.payloads import as_request  # noqa: E402
from gateway.model import Model  # noqa: E402

MODEL_NAME = "echo"
TENSOR = "input-0"
HOP, DECODED, GRAPH_1, TWICE, GRAPH_2 = "hop", "hop-decoded", "graph-1", "twice", "graph-2"
ROUTES = (HOP, DECODED, GRAPH_1, TWICE, GRAPH_2)
NO_OTEL = {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}
LOAD_BOUND = 0.9  # a load process this busy (and the gateway less so) limits the figures

LEGEND = """
- route: hop = the identity transformer (pass-through); hop-decoded = a transformer that
  forwards in its own predict (request decoded, answer encoded); graph-1 = a Sequence of one
  step; twice = a transformer calling its hop twice in a row; graph-2 = a Sequence of two
  steps. Every one is `python -m gateway serve` with default flags, tracing off.
- gw CPU/req: user + system CPU time of the gateway process (/proc/<pid>/stat, all its
  threads) over the window, per request answered; gw CPU: its busy share of one CPU.
  pred CPU/req: the predictor's, per request (two calls per request for twice and graph-2).
  load / other CPU: busy share of one CPU of the load process and of the rest of the
  machine (a high other CPU means disturbed figures)."""


# The transformers of the hop-decoded and twice routes (`--transformer bench.graph:Class`).


class Forward(Model):
    """Forwards each request to its hop from its own `predict`: decoded, not passed through."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        assert self.predictor_hop is not None
        return await self.predictor_hop.infer(payload, headers or {})


class Twice(Forward):
    """Calls its hop twice, the second time with the first answer as the request."""

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        assert self.predictor_hop is not None
        first = await self.predictor_hop.infer(payload, headers or {})
        return await self.predictor_hop.infer(as_request(first, payload), headers or {})


# Payloads


@dataclass(frozen=True)
class Payload:
    key: str
    name: str
    kind: Literal["http", "grpc"]
    protocol: str  # the client's, and the predictor's: "v2" or "grpc-v2"
    body: bytes
    headers: dict[str, str]
    checker: harness.Check

    def target(self, server: Server) -> str:
        path = f"/v2/models/{MODEL_NAME}/infer"
        return server.base_url + path if self.kind == "http" else server.grpc_target

    def check(self, server: Server) -> None:
        self.checker(self.target(server), self.body, self.headers)


def payloads() -> list[Payload]:
    import numpy as np

    small = [i / 4 for i in range(16)]
    raw = np.random.default_rng(0).standard_normal(1 << 16, dtype=np.float32).tobytes()
    binary_body, binary_headers = harness.v2_binary_body(TENSOR, [1, 1 << 16], raw)
    small_raw = np.asarray(small, dtype=np.float32).tobytes()
    return [
        Payload("v2-json", "REST v2 JSON small", "http", "v2",
                harness.v2_json_body(TENSOR, [1, 16], small), harness.JSON_HEADERS,
                harness.check_v2_json_echo),
        Payload("grpc", "gRPC small", "grpc", "grpc-v2",
                harness.grpc_infer_body(MODEL_NAME, TENSOR, [1, 16], small_raw), {},
                harness.check_grpc_echo),
        Payload("v2-binary", "REST v2 binary 256 KiB", "http", "v2", binary_body,
                binary_headers, harness.check_v2_binary_echo),
    ]  # fmt: skip


PAYLOAD_KEYS = ("v2-json", "grpc", "v2-binary")
# A smoke test (tests/test_readme.py runs it): one gateway per route, about half a minute.
QUICK_PAYLOADS = ("v2-json",)


# Processes


def graph_file(directory: Path, steps: int, url: str) -> Path:
    """A graph named after the echo model: a Sequence of `steps` calls to `url`."""
    lines = [
        "apiVersion: serving.kserve.io/v1alpha1",
        "kind: InferenceGraph",
        f"metadata: {{name: {MODEL_NAME}}}",
        "spec:",
        "  nodes:",
        "    root:",
        "      routerType: Sequence",
        "      steps:",
    ]
    for index in range(steps):
        data = ", data: $response" if index else ""
        lines.append(f"      - {{name: s{index}, serviceUrl: '{url}'{data}}}")
    path = directory / f"graph-{steps}-{url.split(':', 1)[0]}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def gateway(
    python: str,
    route: str,
    predictor: Server,
    protocol: str,
    directory: Path,
    cpus: frozenset[int],
    nice: int,
) -> AbstractContextManager[Server]:
    """The gateway of `route` in front of `predictor`, speaking `protocol` to it."""
    grpc_ = protocol == "grpc-v2"
    host = predictor.grpc_target if grpc_ else f"{harness.LOCALHOST}:{predictor.http_port}"
    argv = [python, "-m", "gateway", "serve", "--model_name", MODEL_NAME]
    argv += ["--http_port", "0", "--grpc_port", "0", "--listen_address", harness.LOCALHOST]
    if route in (GRAPH_1, GRAPH_2):
        url = (
            f"grpc://{host}/{MODEL_NAME}"
            if grpc_
            else f"http://{host}/v2/models/{MODEL_NAME}/infer"
        )
        argv += ["--graph", str(graph_file(directory, 1 if route == GRAPH_1 else 2, url))]
    else:
        argv += ["--predictor_host", host, "--predictor_protocol", protocol]
        if route in (DECODED, TWICE):
            argv += ["--transformer", f"bench.graph:{'Forward' if route == DECODED else 'Twice'}"]
    return harness.spawn(f"{route}-{protocol}", argv, cpus=cpus, env=NO_OTEL, nice=nice)


# Measuring


@dataclass(frozen=True)
class Cell:
    route: str
    payload: str
    result: Result | None
    error: str | None = None


def run_route(
    route: str,
    cases: Sequence[Payload],
    predictor: Server,
    args: argparse.Namespace,
    directory: Path,
    cpus: tuple[frozenset[int], frozenset[int]],
) -> list[Cell]:
    """Each payload through a gateway of `route`: one process per predictor protocol, each
    payload checked, then measured."""
    gateway_cpus, load_cpus = cpus
    cells = []
    for protocol in dict.fromkeys(case.protocol for case in cases):
        carried = [case for case in cases if case.protocol == protocol]
        with ExitStack() as stack:
            try:
                server = stack.enter_context(
                    gateway(args.gateway_python, route, predictor, protocol, directory,
                            gateway_cpus, args.nice)
                )  # fmt: skip
            except (RuntimeError, OSError) as exc:
                _progress(f"{route} -> {protocol}: did not start: {exc}")
                cells += [Cell(route, case.key, None, "did not start") for case in carried]
                continue
            cells += [_measure(route, case, server, predictor, args, load_cpus) for case in carried]
    return cells


def _measure(
    route: str,
    case: Payload,
    server: Server,
    predictor: Server,
    args: argparse.Namespace,
    load_cpus: frozenset[int],
) -> Cell:
    label = f"{route} / {case.name}"
    try:
        case.check(server)
    except Exception as exc:
        _progress(f"{label}: wrong answer: {exc}")
        return Cell(route, case.key, None, f"wrong answer: {' '.join(str(exc).split())[:100]}")
    _progress(f"{label} ...")
    load = Load(
        kind=case.kind,
        target=case.target(server),
        body=case.body,
        headers=case.headers,
        concurrency=args.concurrency,
        warmup=args.warmup,
        duration=args.duration,
        server_pid=server.pid,
        watch_pids=(predictor.pid,),
        cpus=load_cpus,
        nice=args.nice,
    )
    try:
        result = harness.measure(load)
    except RuntimeError as exc:
        _progress(f"{label}: {exc}")
        return Cell(route, case.key, None, "the load process failed")
    error = None
    if result.errors:
        first = " ".join((result.first_error or "").split())[:100]
        error = f"{result.errors} failed requests, first: {first}"
    return Cell(route, case.key, result, error)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# Tables


def results_table(cells: Sequence[Cell], cases: Sequence[Payload]) -> str:
    header = ["payload", "route", "req/s", "p50 ms", "p99 ms", "gw CPU/req ms", "gw CPU",
              "pred CPU/req ms", "load CPU", "other CPU", "note"]  # fmt: skip
    names = {case.key: case.name for case in cases}
    rows = []
    for case in cases:
        for route in ROUTES:
            cell = _cell(cells, route, case.key)
            if cell is None:
                continue
            result = cell.result
            if result is None:
                rows.append([names[case.key], route, *["-"] * 8, cell.error or ""])
                continue
            notes = [cell.error] if cell.error else []
            util = result.server_util
            if result.client_util > LOAD_BOUND and (util or 0.0) < LOAD_BOUND:
                notes.append("load-bound")
            rows.append([
                names[case.key], route, f"{result.rps:,.0f}", harness.ms(result.p50),
                harness.ms(result.p99), harness.ms(result.cpu_per_request, 3),
                "-" if util is None else f"{util:.0%}",
                harness.ms(result.watched_per_request(0), 3), f"{result.client_util:.0%}",
                f"{max(0.0, result.other_util):.0%}", ", ".join(notes),
            ])  # fmt: skip
    return harness.markdown_table(header, rows, frozenset(range(2, 10)))


def ratios_table(cells: Sequence[Cell], cases: Sequence[Payload]) -> str:
    """CPU per request of each route, and the ratios that price a graph step."""
    header = ["payload", *(f"{route} ms" for route in ROUTES), "graph-1 : hop-decoded",
              "graph-1 : hop", "graph-2 : twice", "graph-2 : graph-1"]  # fmt: skip
    pairs = ((GRAPH_1, DECODED), (GRAPH_1, HOP), (GRAPH_2, TWICE), (GRAPH_2, GRAPH_1))
    rows = []
    for case in cases:
        cpu = {route: _cpu(cells, route, case.key) for route in ROUTES}
        rows.append([
            case.name, *(harness.ms(cpu[route], 3) for route in ROUTES),
            *(_ratio(cpu[a], cpu[b]) for a, b in pairs),
        ])  # fmt: skip
    return harness.markdown_table(header, rows, frozenset(range(1, len(header))))


def _cell(cells: Sequence[Cell], route: str, payload: str) -> Cell | None:
    return next((c for c in cells if (c.route, c.payload) == (route, payload)), None)


def _cpu(cells: Sequence[Cell], route: str, payload: str) -> float | None:
    cell = _cell(cells, route, payload)
    if cell is None or cell.result is None or cell.error:
        return None
    return cell.result.cpu_per_request


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


# Main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/graph.py", description=__doc__.split("\n")[0])
    harness.add_run_options(parser, "every gateway")
    parser.add_argument(
        "--payloads",
        type=lambda text: text.split(","),
        default=None,
        help=f"comma-separated, from {','.join(PAYLOAD_KEYS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="REST v2 JSON small only, 0.5 s cells (a smoke test)"
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of every process (negative: root only)"
    )
    parser.add_argument(
        "--gateway-python", default=sys.executable, help="the interpreter of our processes"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = args.payloads or (QUICK_PAYLOADS if args.quick else PAYLOAD_KEYS)
    args.duration = args.duration or (0.5 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    cases = [case for case in payloads() if case.key in chosen]
    gateway_cpus, load_cpus = harness.cpu_split()
    os.sched_setaffinity(0, load_cpus)  # this process only waits: keep it off the gateway's CPU
    python = args.gateway_python

    started = time.perf_counter()
    print(f"# Graph benchmark: {os.cpu_count()} CPUs, gateway on CPU {sorted(gateway_cpus)}, "
          f"predictor and load on CPU {sorted(load_cpus)}, {args.concurrency} in flight, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s per cell"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}\n")  # fmt: skip
    modules = ["aiohttp", "grpcio", "protobuf", "uvloop", "orjson", "pygjson"]
    print(f"- gateway, predictor, load: {harness.python_info(python, modules)}")
    print(f"- checkout: {harness.checkout()}\n")

    rounds: list[list[Cell]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-graph-") as directory:
        argv = [python, "-m", "bench.models", "--sdk", "gateway", "--http_port", "0"]
        argv += ["--grpc_port", "0", "--listen_address", harness.LOCALHOST]
        try:
            predictor = stack.enter_context(
                harness.spawn("predictor", argv, cpus=load_cpus, env=NO_OTEL, nice=args.nice)
            )
        except (RuntimeError, OSError) as exc:
            print(f"the predictor did not start: {exc}")
            return 1
        for number in range(args.rounds):
            if args.rounds > 1:
                _progress(f"round {number + 1} of {args.rounds}")
            cells: list[Cell] = []
            for route in ROUTES:
                cpus = (gateway_cpus, load_cpus)
                cells += run_route(route, cases, predictor, args, Path(directory), cpus)
            rounds.append(cells)
    cells = harness.median_cells(rounds)

    print(results_table(cells, cases))
    print(LEGEND)
    print("\n## CPU per request of the gateway process, and the ratios\n")
    print(ratios_table(cells, cases))
    print(
        "\ngraph-1 : hop-decoded is the graph's own work for a step (node and step "
        "bookkeeping, the Switch / Sequence logic, per-step metrics and timings); graph-1 : hop "
        "adds what decoding costs against the plain hop's pass-through; graph-2 : twice is a "
        "Sequence of two steps against the same two calls in a transformer."
    )
    print(f"\nRan {time.perf_counter() - started:.0f} s.")
    failed = [cell for cell in cells if cell.route in (GRAPH_1, GRAPH_2) and not cell.result]
    failed += [cell for cell in cells if cell.route in (GRAPH_1, GRAPH_2) and cell.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
