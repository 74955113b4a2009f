"""Hop-chain benchmark: direct to the predictor vs through our gateway, KServe's transformer
and a minimal aiohttp / grpc.aio pass-through proxy (the Python floor), in one run.

One predictor (our ModelServer serving the echo model of bench/models.py) answers every row.
In front of it, one at a time, each on the first CPU: our gateway (``python -m gateway serve``,
the identity transformer) with tracing off and with tracing on (OTLP to a local sink that
discards the spans), KServe's transformer (a ``kserve.Model`` with no overrides, KServe's own
``--predictor_host`` / ``--predictor_protocol``), and the floor: an aiohttp app that POSTs the
body to the same path on the predictor with one pooled session, plus a grpc.aio generic
handler that forwards ModelInfer bytes on one channel. The predictor and the load generator
share the second CPU. Run from the repo root:

    python bench/hops.py                       # everything, 1 s warm-up + 5 s per cell
    python bench/hops.py --rounds 3            # each process three times, taking turns; median
    python bench/hops.py --skip-kserve         # no KServe
    python bench/hops.py --payloads v2-binary-1m,grpc-1m --predictors grpc-v2
    python bench/hops.py --quick               # direct, our gateway and the floor; 0.5 s cells
    python bench/hops.py --loads fixed --rate-share 0.3   # open loop only, at 30 %
    python bench/hops.py --passthrough-only --skip-kserve  # the rows the CPU targets judge

Each hop process is measured under two loads: closed (16 callers back to back: the process
saturated) and fixed (an open loop at a share, 50 % by default, of the floor's closed-loop
requests/s on that payload, the same rate for every route: a process partly busy, as a
gateway usually is). CPU per request is compared with the floor's at the same load.

A benchmark, not a test: it exits 0 whether or not the targets are met (each is printed as
PASS or FAIL); it exits 1 only when our gateway cannot be measured (it did not start, answered
wrongly, or failed requests). ``python -m bench.hops --role floor|otlp-sink|kserve-transformer
...`` runs one of the helper processes (the benchmark starts them itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
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

MODEL_NAME = "echo"  # bench.models.MODEL_NAME (not imported: KServe's venv runs this file too)
INFERENCE_HEADER = "Inference-Header-Content-Length"

# Routes: how the load reaches the predictor.
DIRECT, OURS, TRACED, KSERVE, FLOOR = "direct", "gateway", "gateway+otel", "kserve", "floor"
ROUTES = (DIRECT, OURS, TRACED, KSERVE, FLOOR)
PREDICTORS = ("v1", "v2", "grpc-v2")

# Loads: closed (callers back to back) and fixed (an open loop at a share of the floor's rate).
CLOSED, FIXED = "closed", "fixed"
LOADS = (CLOSED, FIXED)
RATE_SHARE = 0.5

CPU_TARGET = 1.2  # our CPU per request at most this multiple of the floor's (pass-through) ...
TRACED_CPU_TARGET = 1.5  # ... and this with tracing on
BRIDGE_CPU_TARGET = 2.0  # REST binary 1 MiB -> gRPC predictor vs the floor's REST binary
RPS_TARGET = 0.8  # requests/s through the gateway at least this share of direct (small)
P99_TARGET = 1.0  # our p99 at most this multiple of KServe's
LOAD_BOUND = 0.9  # a load process this busy (and a hop process less so) limits the figures
STEAL_NOTE = 0.05  # hypervisor steal worth a note (a share of one CPU)

LEGEND = """
- load: closed = 16 callers back to back (the hop process saturated); fixed = requests started
  at a fixed rate (open loop), a share of the floor's closed-loop req/s on the payload, the
  same for every route; latency counts from when each request was due.
- route: direct = load -> predictor; gateway = load -> our gateway -> predictor (tracing off);
  gateway+otel = the same with tracing on (OTLP/HTTP to a local sink on the load CPU that
  discards what it gets); kserve = KServe's transformer; floor = the minimal aiohttp /
  grpc.aio pass-through proxy. predictor: the protocol the hop speaks to the predictor
  (direct and floor: the client's own).
- hop CPU/req: user + system CPU time of the process in the middle (/proc/<pid>/stat, all its
  threads, including the OTLP exporter's) over the window, per request answered; hop CPU: its
  busy share of one CPU. pred CPU/req: the predictor's, per request. load / other CPU: busy
  share of one CPU of the load process and of the rest of the machine (other processes,
  kernel work charged to neither): a high other CPU means disturbed figures."""

TENSOR = "input-0"
MIB = 1 << 20


# Payloads


@dataclass(frozen=True)
class Payload:
    """One kind of request: its body, built once, what carries it, how to check an echo."""

    key: str  # the --payloads name
    name: str
    kind: Literal["http", "grpc"]
    protocol: str  # the client's: "v1", "v2" or "grpc-v2"
    path: str  # the URL path for REST; gRPC calls ModelInfer
    body: bytes
    headers: dict[str, str]
    checker: harness.Check
    small: bool
    # Predictor protocols a gateway can carry it on: its own (pass-through) first.
    predictors: tuple[str, ...]
    binary: bool = False  # REST with the binary tensor extension

    def target(self, server: Server) -> str:
        return server.base_url + self.path if self.kind == "http" else server.grpc_target

    def check(self, server: Server, predictor: str | None = None, json_ok: bool = False) -> str:
        """Raise AssertionError unless `server` (speaking `predictor` to the predictor)
        echoes this payload back; `json_ok`: a binary request may be answered in JSON (the
        same values), which is then returned as a note."""
        checker = self.checker
        if predictor == "v1" and self.protocol == "v2":
            checker = check_v2_json_via_v1
        try:
            checker(self.target(server), self.body, self.headers)
        except AssertionError as exc:
            if not (json_ok and self.binary and str(exc).startswith("no binary answer")):
                raise
            check_v2_binary_as_json(self.target(server), self.body, self.headers)
            return "answers JSON, not binary"
        return ""

    def passthrough(self, predictor: str) -> bool:
        return predictor == self.protocol


def payloads() -> list[Payload]:
    import numpy as np

    # Values exact in FP32, so a JSON echo compares equal.
    small = [i / 4 for i in range(16)]
    wide = [(i % 4096) / 8 for i in range(16384)]
    big = np.random.default_rng(0).standard_normal(MIB // 4, dtype=np.float32)
    raw, shape = big.tobytes(), [1, big.size]
    small_raw = np.asarray(small, dtype=np.float32).tobytes()
    binary_body, binary_headers = harness.v2_binary_body(TENSOR, shape, raw)
    infer = f"/v2/models/{MODEL_NAME}/infer"
    json_ = harness.JSON_HEADERS
    rest_v2 = ("v2", "grpc-v2", "v1")  # a v1 predictor takes v2 JSON mapped to instances
    grpc_ = ("grpc-v2", "v2")
    return [
        Payload(
            "v1",
            "REST v1 small",
            "http",
            "v1",
            f"/v1/models/{MODEL_NAME}:predict",
            harness.v1_body([small[i : i + 4] for i in range(0, 16, 4)]),
            json_,
            harness.check_v1_echo,
            True,
            ("v1", "v2", "grpc-v2"),
        ),
        Payload(
            "v2-json",
            "REST v2 JSON small",
            "http",
            "v2",
            infer,
            harness.v2_json_body(TENSOR, [1, len(small)], small),
            json_,
            harness.check_v2_json_echo,
            True,
            rest_v2,
        ),
        Payload(
            "v2-json-16k",
            "REST v2 JSON 16k FP32",
            "http",
            "v2",
            infer,
            harness.v2_json_body(TENSOR, [1, len(wide)], wide),
            json_,
            harness.check_v2_json_echo,
            False,
            rest_v2,
        ),
        Payload(
            "v2-binary-1m",
            "REST v2 binary 1 MiB",
            "http",
            "v2",
            infer,
            binary_body,
            binary_headers,
            harness.check_v2_binary_echo,
            False,
            ("v2", "grpc-v2"),
            binary=True,
        ),
        Payload(
            "grpc",
            "gRPC small",
            "grpc",
            "grpc-v2",
            "",
            harness.grpc_infer_body(MODEL_NAME, TENSOR, [1, len(small)], small_raw),
            {},
            harness.check_grpc_echo,
            True,
            grpc_,
        ),
        Payload(
            "grpc-1m",
            "gRPC 1 MiB",
            "grpc",
            "grpc-v2",
            "",
            harness.grpc_infer_body(MODEL_NAME, TENSOR, shape, raw),
            {},
            harness.check_grpc_echo,
            False,
            grpc_,
        ),
    ]


def check_v2_json_via_v1(url: str, body: bytes, headers: Any = harness.JSON_HEADERS) -> None:
    """`harness.check_v2_json_echo`, but for the datatype: v1 ``instances`` carry none, so a
    gateway that maps v2 to a v1 predictor reads FP32 values back as JSON numbers (FP64)."""
    status, _, answer = harness.http_post(url, body, headers)
    if status != 200:
        raise AssertionError(f"HTTP {status}: {answer[:300]!r}")
    sent, got = json.loads(body)["inputs"][0], json.loads(answer)["outputs"][0]
    for key in ("name", "shape", "data"):
        if got.get(key) != sent[key]:
            raise AssertionError(f"output {key} {str(got.get(key))[:200]} != input's")


def check_v2_binary_as_json(url: str, body: bytes, headers: Any) -> None:
    """Raise AssertionError unless binary `body` comes back as a JSON output, same values."""
    import numpy as np

    status, _, answer = harness.http_post(url, body, headers)
    if status != 200:
        raise AssertionError(f"HTTP {status}: {answer[:300]!r}")
    raw = body[int(headers["Inference-Header-Content-Length"]) :]
    output = json.loads(answer)["outputs"][0]
    data = np.asarray(output["data"], dtype=np.float32)
    if data.tobytes() != raw:
        raise AssertionError("the JSON output's values differ from the binary input's")


PAYLOAD_KEYS = ("v1", "v2-json", "v2-json-16k", "v2-binary-1m", "grpc", "grpc-1m")


# Processes


@dataclass(frozen=True)
class Upstreams:
    """What the hop processes forward to."""

    predictor: Server
    sink: Server | None  # the OTLP sink, when a traced route runs

    def host(self, protocol: str) -> str:
        port = self.predictor.grpc_port if protocol == "grpc-v2" else self.predictor.http_port
        return f"{harness.LOCALHOST}:{port}"


Start = Callable[[Upstreams, frozenset[int]], AbstractContextManager[Server]]


@dataclass(frozen=True)
class Variant:
    """One process in the middle: a route, and the predictor protocol it speaks (None: the
    floor, which forwards each body on the protocol it came in)."""

    route: str
    predictor: str | None
    start: Start = field(compare=False)

    @property
    def label(self) -> str:
        return self.route if self.predictor is None else f"{self.route} -> {self.predictor}"

    def carries(self, payload: Payload) -> bool:
        return self.predictor is None or self.predictor in payload.predictors


# Our own servers log this once both listen; the helper processes below print the same.
LISTENING = harness.LISTENING
NO_OTEL = {"OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}


def predictor_server(
    python: str, cpus: frozenset[int], nice: int
) -> AbstractContextManager[Server]:
    argv = [python, "-m", "bench.models", "--sdk", "gateway", "--http_port", "0"]
    argv += ["--grpc_port", "0", "--listen_address", harness.LOCALHOST]
    return harness.spawn("predictor", argv, cpus=cpus, env=NO_OTEL, nice=nice)


def sink_server(python: str, cpus: frozenset[int], nice: int) -> AbstractContextManager[Server]:
    argv = [python, "-m", "bench.hops", "--role", "otlp-sink"]
    return harness.spawn("otlp-sink", argv, cpus=cpus, ready_path=None, nice=nice)


def ours(python: str, predictor: str, extra: Sequence[str], traced: bool, nice: int) -> Start:
    def start(upstreams: Upstreams, cpus: frozenset[int]) -> AbstractContextManager[Server]:
        argv = [python, "-m", "gateway", "serve", "--model_name", MODEL_NAME]
        argv += ["--predictor_host", upstreams.host(predictor), "--predictor_protocol", predictor]
        argv += ["--http_port", "0", "--grpc_port", "0", "--listen_address", harness.LOCALHOST]
        env = dict(NO_OTEL)
        if traced:
            assert upstreams.sink is not None
            env = {
                "OTEL_SDK_DISABLED": "false",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": upstreams.sink.base_url,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "bench-gateway",
            }
        name = f"{TRACED if traced else OURS}-{predictor}"
        return harness.spawn(name, [*argv, *extra], cpus=cpus, env=env, nice=nice)

    return start


def kserve(python: Path, predictor: str, nice: int) -> Start:
    def start(upstreams: Upstreams, cpus: frozenset[int]) -> AbstractContextManager[Server]:
        # KServe binds 0.0.0.0 / [::] and does not log a port 0 it was given: choose them.
        http_port, grpc_port = harness.free_port(), harness.free_port()
        argv = [str(python), "-m", "bench.hops", "--role", "kserve-transformer"]
        argv += ["--model_name", MODEL_NAME, "--predictor_host", upstreams.host(predictor)]
        argv += ["--predictor_protocol", predictor]
        argv += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        return harness.spawn(
            f"kserve-{predictor}",
            argv,
            cpus=cpus,
            env=NO_OTEL,
            http_port=http_port,
            grpc_port=grpc_port,
            listening=None,
            nice=nice,
        )

    return start


def floor(python: str, nice: int) -> Start:
    def start(upstreams: Upstreams, cpus: frozenset[int]) -> AbstractContextManager[Server]:
        argv = [python, "-m", "bench.hops", "--role", "floor"]
        argv += ["--rest-upstream", upstreams.predictor.base_url]
        argv += ["--grpc-upstream", upstreams.predictor.grpc_target]
        return harness.spawn(FLOOR, argv, cpus=cpus, env=NO_OTEL, ready_path=None, nice=nice)

    return start


# Measuring


@dataclass(frozen=True)
class Cell:
    route: str
    payload: str  # Payload.key
    predictor: str  # the protocol spoken to the predictor
    result: Result | None
    error: str | None = None  # why there is no result, or what failed during it
    note: str = ""
    load: str = CLOSED

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.route, self.payload, self.predictor, self.load

    @property
    def ok(self) -> bool:
        return self.result is not None and self.error is None


def run_direct(
    cases: Sequence[Payload], predictor: Server, args: argparse.Namespace, load_cpus: frozenset[int]
) -> list[Cell]:
    cells = []
    for case in cases:
        load = _load(args, case, case.target(predictor), predictor.pid, (), load_cpus)
        check = functools.partial(case.check, predictor)
        cells.append(_measure(DIRECT, case, case.protocol, load, check))
    return cells


def wanted_loads(
    variant: Variant, case: Payload, loads: Sequence[str], rates: dict[str, float]
) -> list[str]:
    """The loads to measure `case` under. The fixed rate comes from the floor's closed-loop
    figure, so the floor always runs closed too, and the others run fixed once it is known."""
    if variant.route == FLOOR and FIXED in loads:
        return [CLOSED, FIXED]
    return [load for load in loads if load == CLOSED or case.key in rates]


def run_variant(
    variant: Variant,
    cases: Sequence[Payload],
    upstreams: Upstreams,
    args: argparse.Namespace,
    cpus: tuple[frozenset[int], frozenset[int]],
    rates: dict[str, float],
) -> list[Cell]:
    """Start one process in the middle, check then measure every payload it carries under
    each load, stop it. The floor's first closed-loop figures set `rates` (payload key ->
    requests/s of the fixed load)."""
    hop_cpus, load_cpus = cpus
    carried = [case for case in cases if variant.carries(case)]
    if args.passthrough_only and variant.predictor is not None:
        carried = [case for case in carried if case.passthrough(variant.predictor)]
    cells = []

    def predictor_of(case: Payload) -> str:
        return variant.predictor or case.protocol

    with ExitStack() as stack:
        try:
            server = stack.enter_context(variant.start(upstreams, hop_cpus))
        except (RuntimeError, OSError) as exc:
            _progress(f"{variant.label} did not start: {exc}")
            return [
                Cell(variant.route, c.key, predictor_of(c), None, "did not start", load=load)
                for c in carried
                for load in wanted_loads(variant, c, _loads(args, variant, c), rates)
            ]
        watch: tuple[int, ...] = (upstreams.predictor.pid,)
        if variant.route == TRACED and upstreams.sink is not None:
            watch += (upstreams.sink.pid,)
        exported = _sink_bytes(upstreams.sink) if variant.route == TRACED else None
        for case in carried:
            target = case.target(server)
            check = functools.partial(
                case.check, server, variant.predictor, json_ok=variant.route == KSERVE
            )
            for kind in wanted_loads(variant, case, _loads(args, variant, case), rates):
                rate = rates.get(case.key) if kind == FIXED else None
                if kind == FIXED and rate is None:
                    error = "no rate: the floor's closed loop was not measured"
                    cells.append(Cell(variant.route, case.key, predictor_of(case), None, error,
                                      load=kind))  # fmt: skip
                    continue
                load = _load(args, case, target, server.pid, watch, load_cpus, rate)
                dropped = _spans_dropped(server)
                cell = _measure(variant.route, case, predictor_of(case), load, check, kind)
                dropped = _spans_dropped(server) - dropped
                if variant.route == TRACED and dropped:
                    cell = _with_note(cell, f"{dropped} spans dropped")
                cells.append(cell)
                first = variant.route == FLOOR and kind == CLOSED and case.key not in rates
                if first and cell.result is not None and cell.result.rps:
                    rates[case.key] = args.rate_share * cell.result.rps
    # Stopped now, so the exporter has flushed what it still held.
    if exported is not None and _sink_bytes(upstreams.sink) == exported:
        cells = [_with_note(cell, "no spans reached the sink") for cell in cells]
    return cells


def _loads(args: argparse.Namespace, variant: Variant, case: Payload) -> list[str]:
    if args.quick and variant.predictor and not case.passthrough(variant.predictor):
        return [CLOSED]  # a smoke test: the fixed load on the rows it judges
    return list(args.loads)


def _with_note(cell: Cell, note: str) -> Cell:
    note = f"{cell.note}, {note}" if cell.note else note
    return dataclasses.replace(cell, note=note)


def _load(
    args: argparse.Namespace,
    case: Payload,
    target: str,
    pid: int,
    watch: tuple[int, ...],
    load_cpus: frozenset[int],
    rate: float | None = None,
) -> Load:
    return Load(
        kind=case.kind,
        target=target,
        body=case.body,
        headers=case.headers,
        concurrency=args.concurrency,
        warmup=args.warmup,
        duration=args.duration,
        server_pid=pid,
        watch_pids=watch,
        cpus=load_cpus,
        nice=args.nice,
        rate=rate,
    )


def _measure(
    route: str,
    case: Payload,
    predictor: str,
    load: Load,
    check: Callable[[], str | None],
    kind: str = CLOSED,
) -> Cell:
    rate = f" at {load.rate:,.0f} req/s" if load.rate else ""
    label = f"{route} / {case.name} / predictor {predictor} / {kind}{rate}"
    try:
        note = check() or ""
    except Exception as exc:
        _progress(f"{label}: wrong answer: {exc}")
        return Cell(route, case.key, predictor, None, f"wrong answer: {_one_line(exc)}", load=kind)
    _progress(f"{label} ...")
    try:
        result = harness.measure(load)
    except RuntimeError as exc:
        _progress(f"{label}: {exc}")
        return Cell(route, case.key, predictor, None, "the load process failed", load=kind)
    error = None
    if result.errors:
        first = " ".join((result.first_error or "").split())[:100]
        error = f"{result.errors} failed requests, first: {first}"
    return Cell(route, case.key, predictor, result, error, note, kind)


def _one_line(exc: Exception, limit: int = 100) -> str:
    """What went wrong, short and on one line (a table cell)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    # A grpc.RpcError's str() spans several lines: its code and details say it all.
    grpc_error = callable(code) and callable(details)
    text = f"gRPC {code().name}: {details()}" if grpc_error else str(exc)  # type: ignore[misc]
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_error(error: str | None) -> str:
    """The status in an error text ("HTTP 500", "gRPC INTERNAL"), else its start."""
    match = re.search(r"(HTTP \d+|gRPC [A-Z_]+)", error or "")
    return match.group(1) if match else (error or "")[:30]


def _spans_dropped(server: Server) -> int:
    # The OpenTelemetry SDK logs this once per span its batch queue had no room for.
    return server.output().count("Queue full, dropping")


def _sink_bytes(sink: Server | None) -> int | None:
    if sink is None:
        return None
    try:
        with urllib.request.urlopen(sink.base_url + "/stats", timeout=5) as response:
            return int(json.loads(response.read())["bytes"])
    except (OSError, ValueError, KeyError):
        return None


# Tables


def results_table(cells: Sequence[Cell], cases: Sequence[Payload]) -> str:
    header = ["payload", "predictor", "route", "load", "req/s", "p50 ms", "p99 ms",
              "hop CPU/req ms", "hop CPU", "pred CPU/req ms", "load CPU", "other CPU",
              "note"]  # fmt: skip
    names = {case.key: case.name for case in cases}
    order = {key: i for i, key in enumerate(PAYLOAD_KEYS)}
    route_order = {route: i for i, route in enumerate(ROUTES)}

    def sort_key(cell: Cell) -> tuple[int, int, int, int]:
        predictor = -1 if cell.route in (DIRECT, FLOOR) else PREDICTORS.index(cell.predictor)
        return order[cell.payload], LOADS.index(cell.load), predictor, route_order[cell.route]

    rows = []
    for cell in sorted(cells, key=sort_key):
        name = names[cell.payload]
        predictor = "(same)" if cell.route in (DIRECT, FLOOR) else cell.predictor
        result = cell.result
        if result is None:
            rows.append([name, predictor, cell.route, cell.load, *["-"] * 8, cell.error or ""])
            continue
        notes = [text for text in (cell.error, cell.note) if text]
        hop_util = result.server_util
        if cell.route == DIRECT:
            hop_cpu, hop_share, pred_cpu = "-", "-", harness.ms(result.cpu_per_request, 3)
        else:
            hop_cpu = harness.ms(result.cpu_per_request, 3)
            hop_share = "-" if hop_util is None else f"{hop_util:.0%}"
            pred_cpu = harness.ms(result.watched_per_request(0), 3)
        if result.client_util > LOAD_BOUND and (hop_util or 0.0) < LOAD_BOUND:
            notes.append("load-bound")
        if result.steal_util > STEAL_NOTE:
            notes.append(f"steal {result.steal_util:.0%}")
        rows.append(
            [
                name,
                predictor,
                cell.route,
                cell.load,
                f"{result.rps:,.0f}",
                harness.ms(result.p50),
                harness.ms(result.p99),
                hop_cpu,
                hop_share,
                pred_cpu,
                f"{result.client_util:.0%}",
                f"{max(0.0, result.other_util):.0%}",  # a tick of rounding can go below 0
                ", ".join(notes),
            ]
        )
    return harness.markdown_table(header, rows, frozenset(range(4, 12)))


@dataclass
class Verdicts:
    """Targets judged: (what, passed or None when it could not be measured)."""

    items: list[tuple[str, bool | None]] = field(default_factory=list)

    def judge(self, what: str, ratio: float | None, limit: float, at_most: bool = True) -> str:
        passed = None if ratio is None else (ratio <= limit if at_most else ratio >= limit)
        self.items.append((what, passed))
        sign = "<=" if at_most else ">="
        if ratio is None:
            return f"n/a ({sign} {limit:g})"
        return f"{ratio:.2f} {sign} {limit:g} {harness.verdict(passed)}"


def targets_table(
    cells: Sequence[Cell], cases: Sequence[Payload], routes: frozenset[str], loads: Sequence[str]
) -> tuple[str, Verdicts]:
    """Per (payload, predictor protocol) through our gateway: the ratios and their targets.
    CPU per request is compared with the floor's under the same load, for each load."""
    by_key = {cell.key: cell for cell in cells}
    verdicts = Verdicts()
    header = ["payload", "predictor", "path"]
    header += [f"CPU/req ours : floor, {load}" for load in loads]
    header += [f"traced : floor, {load}" for load in loads]
    header += ["req/s ours : direct", "p99 ours : KServe", "CPU/req KServe : ours"]
    rows = []
    for case in cases:
        direct_cell = by_key.get((DIRECT, case.key, case.protocol, CLOSED))
        for predictor in case.predictors:
            mine = by_key.get((OURS, case.key, predictor, CLOSED))
            if mine is None and not any((OURS, case.key, predictor, x) in by_key for x in loads):
                continue
            theirs = by_key.get((KSERVE, case.key, predictor, CLOSED))
            passthrough = case.passthrough(predictor)
            label = f"{case.name} -> {predictor}"
            path = "pass-through" if passthrough else "bridged"
            row = [case.name, predictor, path]
            for route, limit in ((OURS, CPU_TARGET), (TRACED, TRACED_CPU_TARGET)):
                for load in loads:
                    cell = by_key.get((route, case.key, predictor, load))
                    floor_cell = by_key.get((FLOOR, case.key, case.protocol, load))
                    cpu = _ratio(cell, floor_cell, "cpu")
                    what = f"{label}, {load}: CPU/req{' with tracing' if route == TRACED else ''}"
                    if route not in routes or FLOOR not in routes or cell is None:
                        row.append("-")
                    elif passthrough:
                        row.append(verdicts.judge(f"{what} vs floor", cpu, limit))
                    elif route == OURS and case.binary and predictor == "grpc-v2":
                        row.append(
                            verdicts.judge(f"{what} bridged vs floor", cpu, BRIDGE_CPU_TARGET)
                        )
                    else:
                        row.append(_info(cpu))

            rps = _ratio(mine, direct_cell, "rps")
            if DIRECT not in routes or CLOSED not in loads:
                rps_text = "-"
            elif case.small:
                rps_text = verdicts.judge(f"{label}: req/s vs direct", rps, RPS_TARGET, False)
            else:
                rps_text = _info(rps)

            p99_text = kserve_cpu = "-"
            if KSERVE in routes and theirs is not None:
                if theirs.ok:
                    p99 = _ratio(mine, theirs, "p99")
                    p99_text = verdicts.judge(f"{label}: p99 vs KServe", p99, P99_TARGET)
                    kserve_cpu = _info(_ratio(theirs, mine, "cpu"))
                else:
                    p99_text = f"KServe fails: {_short_error(theirs.error)}"
            rows.append([*row, rps_text, p99_text, kserve_cpu])
    return harness.markdown_table(header, rows), verdicts


def _ratio(a: Cell | None, b: Cell | None, what: str) -> float | None:
    if a is None or b is None or not a.ok or not b.ok:
        return None
    assert a.result is not None
    assert b.result is not None
    if what == "cpu":
        x, y = a.result.cpu_per_request, b.result.cpu_per_request
    elif what == "rps":
        x, y = a.result.rps, b.result.rps
    else:
        x, y = a.result.p99, b.result.p99
    if x is None or not y:
        return None
    return x / y


def _info(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The benchmark


def _choices(value: str, allowed: Sequence[str], what: str) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    harness.add_run_options(parser, "every process")
    parser.add_argument(
        "--payloads",
        type=lambda v: _choices(v, PAYLOAD_KEYS, "payload"),
        default=list(PAYLOAD_KEYS),
        help=f"comma-separated, from {','.join(PAYLOAD_KEYS)} (default: all)",
    )
    parser.add_argument(
        "--predictors",
        type=lambda v: _choices(v, PREDICTORS, "predictor protocol"),
        default=list(PREDICTORS),
        help="predictor protocols the gateways speak (default: v1,v2,grpc-v2)",
    )
    parser.add_argument(
        "--routes",
        type=lambda v: _choices(v, ROUTES, "route"),
        default=None,
        help=f"comma-separated, from {','.join(ROUTES)} (default: all)",
    )
    parser.add_argument("--skip-kserve", action="store_true", help="no KServe transformer")
    parser.add_argument(
        "--passthrough-only",
        action="store_true",
        help="only the rows where the predictor speaks the client's protocol",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="direct, our gateway (tracing off) and the floor, 0.5 s cells, the fixed load on "
        "pass-through rows only (a smoke test)",
    )
    parser.add_argument(
        "--loads",
        type=lambda v: _choices(v, LOADS, "load"),
        default=list(LOADS),
        help="closed (callers back to back) and/or fixed (an open loop at --rate-share of the "
        "floor's closed-loop req/s); default: both",
    )
    parser.add_argument(
        "--rate-share",
        type=float,
        default=RATE_SHARE,
        help="the fixed load's rate, as a share of the floor's closed-loop req/s "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag for our gateway (repeatable), e.g. "
        "--gateway-arg=--enable_latency_logging=false",
    )
    harness.add_kserve_options(parser)
    parser.add_argument(
        "--nice", type=int, default=0, help="niceness of every process (negative: root only)"
    )
    parser.add_argument(
        "--gateway-python", default=sys.executable, help="the interpreter of our processes"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--role"]:
        return run_role(argv[1] if len(argv) > 1 else "", argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    routes = set(args.routes or ROUTES)
    if args.quick:
        routes = {DIRECT, OURS, FLOOR} if args.routes is None else routes - {KSERVE}
    if args.skip_kserve:
        routes.discard(KSERVE)
    args.duration = args.duration or (0.5 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)

    cases = [case for case in payloads() if case.key in args.payloads]
    hop_cpus, load_cpus = harness.cpu_split()
    # This process only waits: keep it off the hop's CPU.
    os.sched_setaffinity(0, load_cpus)
    python, nice = args.gateway_python, args.nice
    notes = []
    variants: list[Variant] = []
    for route in (OURS, TRACED):
        if route in routes:
            traced = route == TRACED
            variants += [
                Variant(route, p, ours(python, p, args.gateway_arg, traced, nice))
                for p in args.predictors
            ]
    kserve_path: Path | None = None
    if KSERVE in routes:
        found = harness.kserve_python(args)
        if isinstance(found, Path):
            kserve_path = found
            variants += [Variant(KSERVE, p, kserve(found, p, nice)) for p in args.predictors]
        else:
            notes.append(found)
            routes.discard(KSERVE)
    if FLOOR in routes:
        # First: its closed-loop figures set the fixed load's rate for everyone.
        variants.insert(0, Variant(FLOOR, None, floor(python, nice)))
    elif FIXED in args.loads:
        notes.append("No fixed-rate load: its rate comes from the floor, which did not run.")
        args.loads = [load for load in args.loads if load != FIXED]

    started = time.perf_counter()
    print(f"# Hop-chain benchmark: {os.cpu_count()} CPUs, hop process on CPU {sorted(hop_cpus)}, "
          f"predictor and load on CPU {sorted(load_cpus)}, {args.concurrency} in flight, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s per cell"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}"
          f"{f', nice {nice}' if nice else ''}\n")  # fmt: skip
    modules = ["aiohttp", "grpcio", "protobuf", "uvloop", "orjson", "opentelemetry-sdk"]
    print(f"- ours, floor, predictor, load: {harness.python_info(python, modules)}")
    if kserve_path is not None:
        kmods = ["kserve", "fastapi", "uvicorn", "httpx", "grpcio"]
        print(f"- kserve: {harness.python_info(kserve_path, kmods)}")
    print(f"- checkout: {harness.checkout()}")
    if args.gateway_arg:
        print(f"- gateway flags: {' '.join(args.gateway_arg)}")
    print(f"- routes: {', '.join(r for r in ROUTES if r in routes)}")
    print()

    rounds: list[list[Cell]] = []
    rates: dict[str, float] = {}  # payload key -> requests/s of the fixed load
    with ExitStack() as stack:
        try:
            predictor = stack.enter_context(predictor_server(python, load_cpus, nice))
            sink = None
            if TRACED in routes:
                sink = stack.enter_context(sink_server(python, load_cpus, nice))
        except (RuntimeError, OSError) as exc:
            print(f"the predictor (or the OTLP sink) did not start: {exc}")
            return 1
        upstreams = Upstreams(predictor, sink)
        for number in range(args.rounds):
            if args.rounds > 1:
                _progress(f"round {number + 1} of {args.rounds}")
            cells: list[Cell] = []
            if DIRECT in routes:
                cells += run_direct(cases, predictor, args, load_cpus)
            for variant in variants:
                # The rates come from the first round; later rounds keep them.
                known = rates if number == 0 else dict(rates)
                cells += run_variant(variant, cases, upstreams, args, (hop_cpus, load_cpus), known)
            rounds.append(cells)
    cells = harness.median_cells(rounds)

    print(results_table(cells, cases))
    print(LEGEND)
    for note in notes:
        print(f"\n{note}")
    if rates:
        shown = ", ".join(f"{c.name} {rates[c.key]:,.0f}" for c in cases if c.key in rates)
        print(f"\nFixed load ({args.rate_share:.0%} of the floor's closed-loop req/s): {shown}.")
    table, verdicts = targets_table(cells, cases, frozenset(routes), args.loads)
    print("\n## Through our gateway: ratios and targets\n")
    print(table)
    print(
        f"\nTargets: CPU/req at most {CPU_TARGET:g}x the floor's (same load) on pass-through rows "
        f"({TRACED_CPU_TARGET:g}x with tracing on); REST binary 1 MiB -> grpc-v2 at most "
        f"{BRIDGE_CPU_TARGET:g}x the floor's REST binary pass-through; req/s at least "
        f"{RPS_TARGET:g}x direct on small payloads; p99 at most {P99_TARGET:g}x KServe's. "
        "Unjudged ratios are shown bare."
    )
    failed = [what for what, ok in verdicts.items if ok is False]
    missing = [what for what, ok in verdicts.items if ok is None]
    passed = len(verdicts.items) - len(failed) - len(missing)
    print(f"\ntargets: {passed} pass, {len(failed)} fail, {len(missing)} not measured")
    for what in failed:
        print(f"  FAIL {what}")
    for what in missing:
        print(f"  n/a  {what}")
    exit_code = 0
    if any(not cell.ok for cell in cells if cell.route == OURS):
        exit_code = 1
        print("\nour gateway could not be measured on every row (see the note column)")
    print(f"\nRan {time.perf_counter() - started:.0f} s.")
    return exit_code


# Helper processes: python -m bench.hops --role NAME ...


def run_role(role: str, argv: Sequence[str]) -> int:
    roles: dict[str, Callable[[Sequence[str]], int]] = {
        "floor": _floor_main,
        "otlp-sink": _sink_main,
        "kserve-transformer": _kserve_main,
    }
    if role not in roles:
        print(f"unknown role {role!r}; one of {', '.join(roles)}", file=sys.stderr)
        return 2
    return roles[role](argv)


def _floor_main(argv: Sequence[str]) -> int:
    """The floor: the least a Python proxy can do per request, on the stack ours is built on
    (aiohttp, grpc.aio, uvloop when installed). No logging, no metrics, no headers but the
    framing ones."""
    parser = argparse.ArgumentParser(prog="bench.hops --role floor")
    parser.add_argument("--rest-upstream", required=True, help="http://host:port")
    parser.add_argument("--grpc-upstream", required=True, help="host:port")
    parser.add_argument("--http-port", type=int, default=0, help="default: any free one")
    parser.add_argument("--grpc-port", type=int, default=0, help="default: any free one")
    args = parser.parse_args(argv)
    upstreams = (args.rest_upstream.rstrip("/"), args.grpc_upstream)
    _run_loop(_floor(*upstreams, args.http_port, args.grpc_port))
    return 0


async def _floor(rest_upstream: str, grpc_upstream: str, http_port: int, grpc_port: int) -> None:
    import asyncio
    import signal
    import warnings

    import aiohttp
    import grpc
    from aiohttp import web

    # aiohttp warns that a body over 1 MiB given as bytes may block the loop; it is one write.
    warnings.simplefilter("ignore", ResourceWarning)
    session = aiohttp.ClientSession()  # one pooled session (100 connections, keep-alive)

    async def forward(request: web.Request) -> web.Response:
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if INFERENCE_HEADER in request.headers:
            headers[INFERENCE_HEADER] = request.headers[INFERENCE_HEADER]
        body = await request.read()
        async with session.post(rest_upstream + request.raw_path, data=body, headers=headers) as up:
            answer = await up.read()
            out = {"Content-Type": up.headers.get("Content-Type", "application/json")}
            if INFERENCE_HEADER in up.headers:
                out[INFERENCE_HEADER] = up.headers[INFERENCE_HEADER]
            return web.Response(body=answer, status=up.status, headers=out)

    app = web.Application(client_max_size=256 * MIB)
    app.router.add_post("/{path:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, harness.LOCALHOST, http_port).start()
    http_port = runner.addresses[0][1]

    channel = grpc.aio.insecure_channel(grpc_upstream, options=list(harness.GRPC_OPTIONS))
    handlers: dict[str, Any] = {}

    class Forward(grpc.GenericRpcHandler):  # type: ignore[type-arg]
        def service(self, details: Any) -> Any:
            handler = handlers.get(details.method)
            if handler is None:  # one callable per method: bytes in, bytes out
                call = channel.unary_unary(details.method, None, None)

                async def relay(request: bytes, context: Any) -> bytes:
                    answer: bytes = await call(request)
                    return answer

                handler = handlers[details.method] = grpc.unary_unary_rpc_method_handler(relay)
            return handler

    server = grpc.aio.server(handlers=[Forward()], options=list(harness.GRPC_OPTIONS))
    grpc_port = server.add_insecure_port(f"{harness.LOCALHOST}:{grpc_port}")
    await server.start()
    print(f"listening: REST on {http_port}, gRPC on {grpc_port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)
    await runner.cleanup()
    await session.close()
    await channel.close(None)


def _run_loop(main: Any) -> None:
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(main)
    else:
        uvloop.run(main)


def _sink_main(argv: Sequence[str]) -> int:
    """An OTLP/HTTP endpoint that reads each export and discards it (200, empty body);
    GET /stats says how many posts and bytes it got."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stats = {"posts": 0, "bytes": 0}

    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            stats["posts"] += 1
            stats["bytes"] += length
            self._answer(b"", "application/x-protobuf")

        def do_GET(self) -> None:
            self._answer(json.dumps(stats).encode(), "application/json")

        def _answer(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((harness.LOCALHOST, 0), Sink)
    print(f"listening: REST on {server.server_address[1]}, gRPC on none", flush=True)
    server.serve_forever()
    return 0


def _kserve_main(argv: Sequence[str]) -> int:
    """KServe's transformer: a `kserve.Model` with no overrides, in front of the predictor
    KServe's own flags name (``--predictor_host``, ``--predictor_protocol``). Runs in KServe's
    virtual environment; KServe parses ``sys.argv`` itself."""
    import kserve  # type: ignore[import-not-found, unused-ignore]
    from kserve import model_server  # type: ignore[import-not-found, unused-ignore]

    class Forward(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.ready = True

    args, _ = model_server.parser.parse_known_args()
    kserve.ModelServer().start([Forward(args.model_name)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
