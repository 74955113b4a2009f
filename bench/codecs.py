"""Codec throughput: FP32 tensors through JSON, binary, gRPC and REST-binary -> gRPC, in MB/s.

Each number is set beside two references measured the same way in the same run: a plain
`bytes` copy of the tensor's size (memcpy) and orjson serialising the numpy array directly.
MB/s counts tensor data (10**6 bytes of FP32 per second), not wire bytes, so every path of one
size is measured against the same work. Encode starts from an `InferRequest` whose input holds
the array (as `set_data_from_numpy` leaves it) and ends with wire bytes; decode starts from wire
bytes and ends with an `InferRequest` ("lazy") or with every input read with `as_numpy()`
("read"). Run from the repo root:

    python bench/codecs.py                    # 1 KiB, 1 MiB and 64 MiB
    python bench/codecs.py --sizes 4KiB,16MiB
    python bench/codecs.py --quick            # tiny sizes, a couple of seconds (smoke test)

A benchmark, not a test: it always exits 0 and prints each target as PASS or FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # Windows: no page-fault counts
    resource = None  # type: ignore[assignment]

# Run as a script, Python puts bench/ first on sys.path, where a benchmark module named like a
# library (this file, or a future bench/grpc.py) would shadow it; benchmark this checkout instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from google.protobuf import __version__ as protobuf_version  # noqa: E402
from google.protobuf.internal import api_implementation  # noqa: E402

from bench import harness  # noqa: E402
from gateway import InferInput, InferRequest  # noqa: E402
from gateway._proto import pb  # noqa: E402

Array = np.ndarray[Any, Any]
Call = Callable[[], object]

KIB = 1 << 10
MIB = 1 << 20
FULL_SIZES = (KIB, MIB, 64 * MIB)
QUICK_SIZES = (KIB, 64 * KIB)

MEMCPY_SHARE = 1 / 3  # binary and gRPC paths: at least this share of memcpy's MB/s ...
MEMCPY_FROM = MIB  # ... for payloads of this size and up
ORJSON_FACTOR = 2.0  # JSON encode: at most this many times slower than orjson on the array

MODEL = "bench"
INPUT = "input-0"


@dataclass(frozen=True)
class Timing:
    """How long each cell is measured: best of repeated samples, within a time budget."""

    budget: float  # seconds of samples per cell, once `min_repeats` are done
    min_repeats: int
    max_repeats: int
    min_sample: float  # seconds a sample should last; fast calls loop inside one sample
    rounds: int  # the cells of one size take turns this many times


FULL = Timing(budget=1.0, min_repeats=3, max_repeats=200, min_sample=0.005, rounds=5)
QUICK = Timing(budget=0.005, min_repeats=1, max_repeats=3, min_sample=0.0002, rounds=1)


@dataclass(frozen=True)
class Case:
    """One row: a call that does the work for one payload size."""

    path: str
    call: Call
    memcpy_target: bool = False  # held to MEMCPY_SHARE of memcpy (from MEMCPY_FROM up)
    orjson_target: bool = False  # held to within ORJSON_FACTOR of orjson on the array


@dataclass(frozen=True)
class Row:
    size: int
    path: str
    seconds: float
    faults: float | None
    mbps: float
    vs_memcpy: float
    vs_orjson: float | None
    target: str
    passed: bool | None


class Sampler:
    """The samples of one call: best time per call, time spent, page faults."""

    def __init__(self, call: Call, timing: Timing) -> None:
        self.call = call
        self.timing = timing
        self.number = _loops_per_sample(call, timing.min_sample)
        self.best = math.inf
        self.spent = 0.0
        self.samples = 0
        self.faults: int | None = 0

    def done(self) -> bool:
        timing = self.timing
        return self.samples >= timing.max_repeats or (
            self.samples >= timing.min_repeats and self.spent >= timing.budget
        )

    def run(self, seconds: float) -> None:
        """Take samples for about `seconds` (at least one) unless done."""
        call, number = self.call, self.number
        faults_before = _page_faults()
        spent = 0.0
        while not self.done() and (spent == 0.0 or spent < seconds):
            start = time.perf_counter()
            for _ in range(number):
                call()
            elapsed = time.perf_counter() - start
            self.best = min(self.best, elapsed / number)
            self.samples += 1
            spent += elapsed
        self.spent += spent
        faults_after = _page_faults()
        if self.faults is None or faults_before is None or faults_after is None:
            self.faults = None
        else:
            self.faults += faults_after - faults_before

    @property
    def faults_per_call(self) -> float | None:
        return None if self.faults is None else self.faults / max(1, self.samples * self.number)


def best_seconds(calls: Sequence[Call], timing: Timing) -> list[tuple[float, float | None]]:
    """Seconds per call (the best sample) and page faults per call, for each of `calls`.

    The calls take turns in rounds, so that a passing disturbance (another process, the
    machine's clock) hits every call alike rather than one row; the collector is off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        samplers = []
        for call in calls:
            gc.collect()
            samplers.append(Sampler(call, timing))
        for _ in range(timing.rounds):
            for sampler in samplers:
                gc.collect()
                sampler.run(timing.budget / timing.rounds)
        return [(sampler.best, sampler.faults_per_call) for sampler in samplers]
    finally:
        if was_enabled:
            gc.enable()


def _loops_per_sample(call: Call, min_sample: float) -> int:
    # As timeit's autorange: 1, 2, 5, 10, 20, ... calls until one sample lasts long enough to
    # time well. The first call also warms caches and allocator.
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            call()
        if time.perf_counter() - start >= min_sample:
            return number
        number *= 5 if str(number).startswith("2") else 2


def _page_faults() -> int | None:
    # Every fresh large buffer costs one minor fault per page the first time it is written, a
    # cost a copy in cache never shows: this count tells copies-into-new-memory apart.
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def tensor(size: int) -> Array:
    """`size` bytes of FP32, values as a model's activations might be (never NaN or inf)."""
    return np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32).reshape(1, -1)


def request(array: Array, binary: bool) -> InferRequest:
    """A request as a transformer builds one from an array."""
    infer_input = InferInput(INPUT, list(array.shape), "FP32")
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return InferRequest(MODEL, [infer_input], request_id="1")


def read(decoded: InferRequest) -> InferRequest:
    """Touch the data as a consumer does: every input as an array."""
    for infer_input in decoded.inputs:
        infer_input.as_numpy()
    return decoded


def cases(array: Array) -> list[Case]:
    """Every path for one payload, its wire forms built once and checked to round-trip."""
    source = bytearray(array.tobytes())
    json_request, binary_request = request(array, False), request(array, True)
    json_body, _ = json_request.rest_body(False)
    binary_body, json_length = binary_request.rest_body(True)
    grpc_wire = binary_request.to_grpc_bytes()
    _check_wire_forms(array, json_body, binary_body, json_length, grpc_wire)

    def json_encode() -> object:
        return json_request.rest_body(False)

    def json_decode() -> InferRequest:
        return InferRequest.from_bytes(json_body, None, MODEL)

    def binary_encode() -> object:
        return binary_request.rest_body(True)

    def binary_decode() -> InferRequest:
        return InferRequest.from_bytes(binary_body, json_length, MODEL)

    def grpc_decode() -> InferRequest:
        return InferRequest.from_grpc_bytes(grpc_wire)

    def grpc_decode_pb() -> InferRequest:
        return InferRequest.from_grpc(pb.ModelInferRequest.FromString(grpc_wire))

    def json_decode_floor() -> object:
        return np.asarray(orjson.loads(json_body)["inputs"][0]["data"], dtype=np.float32)

    return [
        Case("memcpy: bytes(bytearray)", lambda: bytes(source)),
        Case("ref: orjson.dumps(ndarray)", lambda: _orjson_numpy(array)),
        Case("ref: np.asarray(orjson.loads(json))", json_decode_floor),
        Case("JSON encode (rest_body)", json_encode, orjson_target=True),
        Case("JSON decode lazy (from_bytes)", json_decode),
        Case("JSON decode read (+as_numpy)", lambda: read(json_decode())),
        Case("binary encode (rest_body)", binary_encode, memcpy_target=True),
        Case("binary decode lazy (from_bytes)", binary_decode, memcpy_target=True),
        Case("binary decode read (+as_numpy)", lambda: read(binary_decode()), memcpy_target=True),
        Case(
            "gRPC encode (to_grpc_bytes)",
            binary_request.to_grpc_bytes,
            memcpy_target=True,
        ),
        Case(
            "gRPC encode [pb] (to_grpc().SerializeToString)",
            lambda: binary_request.to_grpc().SerializeToString(),
            memcpy_target=True,
        ),
        Case("gRPC decode lazy (from_grpc_bytes)", grpc_decode, memcpy_target=True),
        Case("gRPC decode read (+as_numpy)", lambda: read(grpc_decode()), memcpy_target=True),
        Case("gRPC decode lazy [pb] (from_grpc(FromString))", grpc_decode_pb, memcpy_target=True),
        Case(
            "gRPC decode read [pb] (+as_numpy)",
            lambda: read(grpc_decode_pb()),
            memcpy_target=True,
        ),
        Case(
            "REST-binary -> gRPC (from_bytes.to_grpc_bytes)",
            lambda: binary_decode().to_grpc_bytes(),
            memcpy_target=True,
        ),
        Case(
            "REST-binary -> gRPC [pb] (to_grpc().SerializeToString)",
            lambda: binary_decode().to_grpc().SerializeToString(),
            memcpy_target=True,
        ),
    ]


def _orjson_numpy(array: Array) -> bytes:
    return orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)


def _check_wire_forms(
    array: Array, json_body: bytes, binary_body: bytes, json_length: int | None, grpc_wire: bytes
) -> None:
    # A fast wrong codec would make a fine-looking table; refuse to time one.
    decoded = {
        "JSON": InferRequest.from_bytes(json_body, None, MODEL),
        "binary": InferRequest.from_bytes(binary_body, json_length, MODEL),
        "gRPC": InferRequest.from_grpc_bytes(grpc_wire),
        "gRPC [pb]": InferRequest.from_grpc(pb.ModelInferRequest.FromString(grpc_wire)),
        "REST-binary -> gRPC": InferRequest.from_grpc_bytes(
            InferRequest.from_bytes(binary_body, json_length, MODEL).to_grpc_bytes()
        ),
    }
    for name, got in decoded.items():
        if not np.array_equal(got.inputs[0].as_numpy(), array):
            raise SystemExit(f"{name} does not round-trip a {array.nbytes}-byte FP32 tensor")
    via_pb = request(array, True).to_grpc().SerializeToString()
    if pb.ModelInferRequest.FromString(via_pb) != pb.ModelInferRequest.FromString(grpc_wire):
        raise SystemExit("to_grpc_bytes and to_grpc().SerializeToString() disagree")


def measure(size: int, timing: Timing) -> list[Row]:
    measured = cases(tensor(size))
    times = best_seconds([case.call for case in measured], timing)
    timed = [
        (case, seconds, faults) for case, (seconds, faults) in zip(measured, times, strict=True)
    ]
    mbps = {case.path: size / 1e6 / seconds for case, seconds, _ in timed}
    memcpy = mbps["memcpy: bytes(bytearray)"]
    orjson_mbps = mbps["ref: orjson.dumps(ndarray)"]
    rows = []
    for case, seconds, faults in timed:
        target, passed, vs_orjson = "", None, None
        if case.memcpy_target and size >= MEMCPY_FROM:
            target = f">= {MEMCPY_SHARE:.2f}x memcpy"
            passed = mbps[case.path] >= MEMCPY_SHARE * memcpy
        if case.orjson_target:
            vs_orjson = mbps[case.path] / orjson_mbps
            target = f">= {1 / ORJSON_FACTOR:.2f}x orjson"
            passed = vs_orjson >= 1 / ORJSON_FACTOR
        rows.append(
            Row(
                size=size,
                path=case.path,
                seconds=seconds,
                faults=faults,
                mbps=mbps[case.path],
                vs_memcpy=mbps[case.path] / memcpy,
                vs_orjson=vs_orjson,
                target=target,
                passed=passed,
            )
        )
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table, columns padded for reading in a terminal."""
    header = [
        "payload",
        "path",
        "time/op",
        "faults/op",
        "MB/s",
        "x memcpy",
        "x orjson",
        "target",
        "result",
    ]
    body = [
        [
            size_label(row.size),
            row.path,
            _duration(row.seconds),
            "" if row.faults is None else f"{row.faults:,.0f}",
            f"{row.mbps:,.0f}" if row.mbps >= 10 else f"{row.mbps:.2f}",
            f"{row.vs_memcpy:.3g}",
            "" if row.vs_orjson is None else f"{row.vs_orjson:.2f}",
            row.target,
            "" if row.passed is None else ("PASS" if row.passed else "**FAIL**"),
        ]
        for row in rows
    ]
    return harness.markdown_table(header, body, right=frozenset({2, 3, 4, 5, 6}))


def legend(timing: Timing) -> str:
    return "\n".join(
        [
            "- MB/s: 10**6 bytes of tensor data per second (not wire bytes).",
            f"- time/op: the best of >= {timing.min_repeats} samples, about {timing.budget:g} s "
            f"of samples per cell, interleaved with the other cells of its size over "
            f"{timing.rounds} round(s); gc off.",
            "- faults/op: minor page faults per call. Each fresh payload-sized buffer costs "
            "size/4096 of them, which is what large copies pay for beyond the copy itself.",
            f"- memcpy targets apply from {size_label(MEMCPY_FROM)} up; [pb] rows go through "
            "protobuf message objects, for comparison.",
        ]
    )


def summary(rows: Sequence[Row]) -> str:
    judged = [row for row in rows if row.passed is not None]
    failed = [row for row in judged if not row.passed]
    lines = [f"targets: {len(judged) - len(failed)} pass, {len(failed)} fail"]
    lines += [f"  FAIL {size_label(row.size)}: {row.path} ({row.target})" for row in failed]
    return "\n".join(lines)


def environment() -> str:
    return (
        f"Python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} CPUs), "
        f"numpy {np.__version__}, "
        f"orjson {orjson.__version__}, protobuf {protobuf_version} "
        f"({api_implementation.Type()}), FP32 tensors of shape [1, N]"
    )


def size_label(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int:
    """`1KiB`, `64m`, `4096`: a byte count, in binary units; a whole number of FP32."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1KiB, 1MiB, 64MiB)")
    size = int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[(match[2] or "").lower()]
    if size <= 0 or size % 4:
        raise argparse.ArgumentTypeError(f"{text!r}: size must be a positive multiple of 4")
    return size


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def _duration(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats (a smoke test)"
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="comma-separated payload sizes, e.g. 1KiB,1MiB,64MiB (the default)",
    )
    parser.add_argument(
        "--budget", type=float, help="seconds of timing per cell (default 1.0; --quick 0.005)"
    )
    args = parser.parse_args(argv)
    timing = QUICK if args.quick else FULL
    if args.budget is not None:
        timing = dataclasses.replace(timing, budget=args.budget)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)

    print(f"# gateway codecs: {environment()}\n", flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    for size in sizes:
        # Progress on stderr, so that stdout is the table alone.
        print(f"measuring {size_label(size)} ...", file=sys.stderr, flush=True)
        rows += measure(size, timing)
    print(table(rows))
    print(f"\n{legend(timing)}\nRan {time.perf_counter() - started:.1f} s.\n")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
