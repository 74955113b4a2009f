"""What the fault tests share: unique requests and their echo check, clients that classify
every outcome, and the gateway process's resources read from /proc.

Every client call has its own timeout, well above the gateway's; hitting it is a *hang*,
which no test tolerates. An answer is *ok* only when it echoes the request's unique data.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import numpy as np
import orjson

from gateway import InferInput, InferRequest, InferResponse
from tests.e2e.support import MODEL, grpc_infer
from tests.e2e.test_hop_failures import text_metadata
from tests.server.procs import ServerProcess

FAULT_SERVER = "tests.faults.fault_server"
# A generous margin over the configured timeout for a slow, shared CI machine.
MARGIN = 3.0
# How much longer than the gateway's timeout a client waits before calling it a hang.
HANG_AFTER = 10.0

_sequence = itertools.count()


# Requests with unique data


@dataclass(frozen=True)
class Probe:
    """One request's unique INT32 data (a counter and a random number, optionally padded to
    `size` elements) and its id."""

    values: tuple[int, ...]
    request_id: str

    @classmethod
    def new(cls, size: int = 0) -> Probe:
        seq = next(_sequence)
        head = (seq, random.getrandbits(31), os.getpid())
        pad = tuple(range(max(0, size - len(head))))
        return cls(head + pad, f"req-{seq}-{random.getrandbits(32):08x}")

    def rest_body(self) -> bytes:
        tensor = {"name": "x", "shape": [len(self.values)], "datatype": "INT32"}
        return orjson.dumps(
            {"id": self.request_id, "inputs": [{**tensor, "data": list(self.values)}]}
        )

    def grpc_body(self) -> bytes:
        tensor = InferInput("x", [len(self.values)], "INT32")
        tensor.set_data_from_numpy(np.array(self.values, dtype=np.int32))
        return InferRequest(MODEL, [tensor], request_id=self.request_id).to_grpc_bytes()

    def echoed_rest(self, body: bytes) -> bool:
        try:
            answer = orjson.loads(body)
            return bool(answer["outputs"][0]["data"] == list(self.values))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return False

    def echoed_grpc(self, body: bytes) -> bool:
        try:
            values = InferResponse.from_grpc_bytes(body).outputs[0].as_numpy().tolist()
        except Exception:
            return False
        return bool(values == list(self.values))


# Outcomes


@dataclass(frozen=True)
class Outcome:
    """How one call ended. `kind`: ``ok``, ``wrong`` (an answer, not the echo), ``hang``
    (the client's own timeout), ``unclear`` (an error without a message), ``conn:...``
    (the gateway could not be reached), or the status: ``503`` / ``UNAVAILABLE``..."""

    transport: str
    kind: str
    elapsed: float
    detail: str = ""
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


async def rest_call(
    session: aiohttp.ClientSession,
    base_url: str,
    probe: Probe,
    *,
    fault: str | None = None,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """POST `probe` to the gateway's v2 REST endpoint; `timeout` is the client's own."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if fault:
        headers["x-fault"] = fault
    started = time.monotonic()
    try:
        async with session.post(
            f"{base_url}/v2/models/{MODEL}/infer",
            # aiohttp warns about a body over 1 MiB given as bytes; BytesIO streams it.
            data=io.BytesIO(probe.rest_body()),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except asyncio.TimeoutError:
        return Outcome("rest", "hang", time.monotonic() - started, "client timeout")
    except aiohttp.ClientError as exc:
        return Outcome("rest", f"conn:{type(exc).__name__}", time.monotonic() - started, str(exc))
    elapsed = time.monotonic() - started
    if status == 200:
        return Outcome("rest", "ok" if probe.echoed_rest(body) else "wrong", elapsed)
    try:
        message = orjson.loads(body)["error"]
        clear = isinstance(message, str) and bool(message)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message, clear = body[:200].decode("latin-1"), False
    return Outcome("rest", str(status) if clear else "unclear", elapsed, message, retry_after)


async def grpc_call(
    channel: grpc.aio.Channel, probe: Probe, *, fault: str | None = None, timeout: float
) -> Outcome:
    """ModelInfer `probe` on the gateway; `timeout` is the client's deadline."""
    metadata = (("x-fault", fault),) if fault else None
    started = time.monotonic()
    call = grpc_infer(channel)(probe.grpc_body(), timeout=timeout, metadata=metadata)
    try:
        answer = await call
    except grpc.aio.AioRpcError as exc:
        elapsed = time.monotonic() - started
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= timeout - 0.05:
            return Outcome("grpc", "hang", elapsed, exc.details() or "")
        trailers = dict(text_metadata(exc.trailing_metadata()))
        details = exc.details() or ""
        kind = exc.code().name if details else "unclear"
        return Outcome("grpc", kind, elapsed, details, trailers.get("retry-after"))
    elapsed = time.monotonic() - started
    return Outcome("grpc", "ok" if probe.echoed_grpc(answer) else "wrong", elapsed)


def kinds(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """``{"rest 503": 3, "grpc ok": 2, ...}``"""
    return dict(sorted(Counter(f"{o.transport} {o.kind}" for o in outcomes).items()))


# The gateway process's resources


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    fds: int
    # ESTABLISHED TCP connections from the process to the upstream's ports.
    upstream_sockets: int

    @property
    def rss_mib(self) -> float:
        return round(self.rss_kib / 1024, 1)


def usage(pid: int, upstream_ports: Iterable[int] = ()) -> Usage:
    """VmRSS and open descriptors of `pid`, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    inodes = set()
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return Usage(rss, fds, _established(pid, inodes, set(upstream_ports)))


def _established(pid: int, inodes: set[str], ports: set[int]) -> int:
    if not ports:
        return 0
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as file:
                next(file)
                for line in file:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if fields[3] == "01" and fields[9] in inodes and remote_port in ports:
                        count += 1
        except FileNotFoundError:
            continue
    return count


# Tolerances: what "back to baseline" allows, measured after a warm-up (see docs/reliability.md).
# Descriptors: the upstream connections the pool keeps are counted apart (bounded by the
# pool); beyond those a couple may be in flux (a client socket the kernel is still closing).
FD_TOLERANCE = 2
# RSS: the allocator keeps freed MiB-sized buffers for reuse (see gateway.server.allocator),
# so a fault that moved more bytes at once than the warm-up may raise the high-water mark.
RSS_TOLERANCE = 0.10
RSS_FLOOR_KIB = 8 * 1024


@dataclass
class Watch:
    """A gateway process whose resources must come back to a baseline after each fault."""

    server: ServerProcess
    upstream_ports: tuple[int, ...]
    baseline: Usage | None = None

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def now(self) -> Usage:
        return usage(self.pid, self.upstream_ports)

    def within(self, current: Usage, pool: int) -> bool:
        assert self.baseline is not None
        own = current.fds - current.upstream_sockets
        base = self.baseline.fds - self.baseline.upstream_sockets
        rss_limit = self.baseline.rss_kib + max(
            RSS_FLOOR_KIB, int(self.baseline.rss_kib * RSS_TOLERANCE)
        )
        return (
            own <= base + FD_TOLERANCE
            and current.upstream_sockets <= pool
            and current.rss_kib <= rss_limit
        )

    async def settled(self, pool: int, timeout: float = 10.0) -> Usage:
        """Wait until the process is back within tolerance of its baseline; its usage then
        (the last one read, if it never is: the caller's assertion shows it)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.now()
            if self.within(current, pool) or time.monotonic() > deadline:
                return current
            await asyncio.sleep(0.1)


def delta(before: Usage, after: Usage) -> dict[str, Any]:
    return {
        "fds_before": before.fds,
        "fds_after": after.fds,
        "upstream_sockets_before": before.upstream_sockets,
        "upstream_sockets_after": after.upstream_sockets,
        "rss_mib_before": before.rss_mib,
        "rss_mib_after": after.rss_mib,
    }


async def in_flight(session: aiohttp.ClientSession, server: ServerProcess) -> float:
    """The gateway's ``gateway_requests_in_flight`` gauge, from its /metrics."""
    async with session.get(f"{server.base_url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("gateway_requests_in_flight"):
            return float(line.split()[-1])
    return 0.0


async def until_in_flight(
    session: aiohttp.ClientSession, server: ServerProcess, count: int, timeout: float = 15.0
) -> None:
    """Wait until `count` requests are being served by `server`."""
    deadline = time.monotonic() + timeout
    while (now := await in_flight(session, server)) < count:
        assert time.monotonic() < deadline, f"only {now} of {count} requests in flight"
        await asyncio.sleep(0.05)


async def quiet(watch: Watch, readings: int = 3, interval: float = 0.2) -> Usage:
    """The process's usage once its descriptor count has held still for a few readings
    (clients that just hung up leave sockets the gateway is still closing)."""
    last = watch.now()
    steady = 0
    for _ in range(50):
        await asyncio.sleep(interval)
        current = watch.now()
        steady = steady + 1 if current.fds == last.fds else 0
        last = current
        if steady >= readings:
            break
    return last


# Figures for docs/reliability.md


def report(section: str, **figures: Any) -> None:
    """Print one result line, and append it to $GATEWAY_RELIABILITY_REPORT (JSON lines)."""
    line = json.dumps({"section": section, **figures}, default=str)
    print(f"RELIABILITY {line}")
    path = os.environ.get("GATEWAY_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")
