"""Upstreams that fail at the protocol level, in front of real gateway processes.

The predictor is `tests.faults.fault_server`, a process that breaks HTTP and gRPC on request
(the ``x-fault`` header, which the gateways forward). Four ``gateway serve`` processes (the
identity transformer) stand in front of it: one for its REST port, one for its gRPC port,
and one of each for its blackhole port, which accepts connections and never says a word.
The gateways run as in production: a 2 s predictor timeout and 2 retries.

For each fault, REST and gRPC clients send requests with unique data at once. Each must get
the echo of its own data or a clear error (a message, and the status the table in
`gateway.errors` gives) within the timeout plus a margin; a good request right after must
succeed; and the gateway's open descriptors and RSS must come back to their baseline (taken
after a warm-up, see `tests.faults.support` for the tolerances).

What each fault is expected to give, REST client / gRPC client::

    predictor (REST)                           REST        gRPC
    slow:0.5 (within the timeout)              200 echo    OK echo
    slow:5, hang (past the timeout)            504         DEADLINE_EXCEEDED
    half_request (closes mid 1 MiB request)    502 / 503   INTERNAL / UNAVAILABLE
    half_body (closes mid 1 MiB answer)        502         INTERNAL
    garbage, truncated_binary, wrong_length    502         INTERNAL
    status:503 + Retry-After (retried, fails)  503 + R-A   UNAVAILABLE + retry-after
    flaky: two 503s, then an answer            200 echo    OK echo
    status:500                                 500         INTERNAL
    predictor (gRPC)
    slow:0.5                                   200 echo    OK echo
    hang                                       504         DEADLINE_EXCEEDED
    unavailable: twice, then an answer         200 echo    OK echo
    unavailable for good + retry-after         503 + R-A   UNAVAILABLE + retry-after
    status:INTERNAL                            500         INTERNAL
    blackhole (REST predictor)                 504         DEADLINE_EXCEEDED
    blackhole (gRPC predictor)                 504 / 503   DEADLINE_EXCEEDED / UNAVAILABLE

And a predictor that fails slowly with a retryable status: the retry gets only what is left
of the timeout, so that the client has its error within the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest

from tests.e2e.support import gateway_command, start_servers
from tests.faults.support import (
    FAULT_SERVER,
    HANG_AFTER,
    MARGIN,
    Outcome,
    Probe,
    Watch,
    delta,
    grpc_call,
    kinds,
    quiet,
    report,
    rest_call,
)
from tests.hops.upstreams import free_port
from tests.server.procs import ServerProcess

TIMEOUT = 2.0
POOL = 8
AT_ONCE = 3  # requests of each protocol sent at once per fault
FLAGS = (
    "--predictor_request_timeout_seconds", str(TIMEOUT),
    "--predictor_request_retries", "2",
    # Every request of a fault may be retrying at once; the retry budget's default (20% of
    # requests in flight, at least 3) would refuse some of those retries. What the budget
    # does is tested in tests/hops/pool; here each request is to get its retries.
    "--min_retry_concurrency", str(2 * AT_ONCE),
    "--forward_headers", "x-fault",
    # The fault server reads JSON only; the gRPC client's raw tensors go to it as JSON.
    "--predictor_rest_format", "json",
    "--predictor_max_connections", str(POOL),
)  # fmt: skip
# gRPC sends a deadline rounded up: an upstream may see a little more than it was given.
GRPC_ROUNDING = 0.2
MIB_OF_INT32 = (1 << 20) // 4


@dataclass
class Rig:
    faults: ServerProcess
    gateways: dict[str, Watch]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    """The fault server and its four gateways, started at once (the ports chosen first)."""
    http, grpc_port, hole = free_port(), free_port(), free_port()
    upstreams = {
        "rest": (f"127.0.0.1:{http}", "v2", http),
        "grpc": (f"127.0.0.1:{grpc_port}", "grpc-v2", grpc_port),
        "rest-blackhole": (f"127.0.0.1:{hole}", "v2", hole),
        "grpc-blackhole": (f"127.0.0.1:{hole}", "grpc-v2", hole),
    }
    ports = ("--http_port", str(http), "--grpc_port", str(grpc_port), "--blackhole_port", str(hole))
    with ExitStack() as stack:
        faults, *servers = start_servers(
            stack,
            [FAULT_SERVER, *ports],
            *(gateway_command(at, protocol, *FLAGS) for at, protocol, _ in upstreams.values()),
        )
        watches = {
            name: Watch(server, (port,))
            for (name, (_, _, port)), server in zip(upstreams.items(), servers, strict=True)
        }
        rig = Rig(faults, watches)
        asyncio.run(_warm_up(rig))
        yield rig


async def _warm_up(rig: Rig) -> None:
    """The paths the faults take, before the baselines are read: pools, lazily built objects,
    error paths (a timeout: a short deadline of the client's), and the allocator's high-water
    mark for as many MiB bodies at once as a fault sends."""
    calls = []
    timeout = TIMEOUT + HANG_AFTER
    deadline = 0.5
    async with aiohttp.ClientSession() as session:
        channels = {
            name: grpc.aio.insecure_channel(f"127.0.0.1:{watch.server.grpc_port}")
            for name, watch in rig.gateways.items()
        }
        for name, watch in rig.gateways.items():
            url, channel = watch.server.base_url, channels[name]
            calls.append(
                rest_call(
                    session,
                    url,
                    Probe.new(),
                    fault="hang",
                    timeout=timeout,
                    headers={"x-request-timeout": str(deadline)},
                )
            )
            calls.append(grpc_call(channel, Probe.new(), fault="hang", timeout=deadline))
            if "blackhole" in name:
                continue
            batch = [(None, 0), ("status:500", 0)] + [(None, MIB_OF_INT32)] * AT_ONCE
            for fault, size in batch:
                calls.append(rest_call(session, url, Probe.new(size), fault=fault, timeout=timeout))
                calls.append(grpc_call(channel, Probe.new(size), fault=fault, timeout=timeout))
        await asyncio.gather(*calls)
        for channel in channels.values():
            await channel.close(None)
    baselines = await asyncio.gather(*(quiet(watch) for watch in rig.gateways.values()))
    for watch, baseline in zip(rig.gateways.values(), baselines, strict=True):
        watch.baseline = baseline


@dataclass(frozen=True)
class Fault:
    """What the `gateway`'s predictor is asked to do (``x-fault``: text, or made from each
    request's probe, or None), and the outcomes each client may see."""

    id: str
    gateway: str
    fault: str | Callable[[Probe], str] | None
    rest: frozenset[str]
    grpc: frozenset[str]
    size: int = 0
    retry_after: str | None = None

    def header(self, probe: Probe) -> str | None:
        return self.fault(probe) if callable(self.fault) else self.fault


def _fault(
    id: str,
    gateway: str,
    fault: str | Callable[[Probe], str] | None,
    rest: str,
    grpc_codes: str,
    *,
    size: int = 0,
    retry_after: str | None = None,
) -> Any:
    """A `Fault` as a test parameter; `rest` / `grpc_codes`: outcome kinds, ``|``-separated."""
    case = Fault(
        id,
        gateway,
        fault,
        frozenset(rest.split("|")),
        frozenset(grpc_codes.split("|")),
        size,
        retry_after,
    )
    return pytest.param(case, id=id)


CASES = [
    _fault("rest-slow-within-timeout", "rest", "slow:0.5", "ok", "ok"),
    _fault("rest-slow-past-timeout", "rest", "slow:5", "504", "DEADLINE_EXCEEDED"),
    _fault("rest-accepts-never-answers", "rest", "hang", "504", "DEADLINE_EXCEEDED"),
    _fault(
        "rest-closes-mid-1MiB-request",
        "rest",
        "half_request",
        "502|503",
        "INTERNAL|UNAVAILABLE",
        size=MIB_OF_INT32,
    ),
    _fault("rest-closes-mid-1MiB-answer", "rest", "half_body", "502", "INTERNAL"),
    _fault("rest-garbage", "rest", "garbage", "502", "INTERNAL"),
    _fault("rest-truncated-binary", "rest", "truncated_binary", "502", "INTERNAL"),
    _fault("rest-header-length-too-long", "rest", "wrong_length:999999", "502", "INTERNAL"),
    _fault("rest-header-length-not-a-number", "rest", "wrong_length:abc", "502", "INTERNAL"),
    _fault("rest-503-retry-after", "rest", "status:503:1", "503", "UNAVAILABLE", retry_after="1"),
    _fault(
        "rest-503-twice-then-answers",
        "rest",
        lambda probe: f"flaky:{probe.request_id}:2:0.2",
        "ok",
        "ok",
    ),
    _fault("rest-500", "rest", "status:500", "500", "INTERNAL"),
    _fault("grpc-slow-within-timeout", "grpc", "slow:0.5", "ok", "ok"),
    _fault("grpc-accepts-never-answers", "grpc", "hang", "504", "DEADLINE_EXCEEDED"),
    _fault(
        "grpc-unavailable-twice-then-answers",
        "grpc",
        lambda probe: f"unavailable:{probe.request_id}:2:0.2",
        "ok",
        "ok",
    ),
    _fault(
        "grpc-unavailable-retry-after",
        "grpc",
        lambda probe: f"unavailable:{probe.request_id}:99:1",
        "503",
        "UNAVAILABLE",
        retry_after="1",
    ),
    _fault("grpc-internal", "grpc", "status:INTERNAL", "500", "INTERNAL"),
    _fault("rest-blackhole", "rest-blackhole", None, "504", "DEADLINE_EXCEEDED"),
    # gRPC gives up connecting after 20 s and then fails calls at once, until it tries again.
    _fault("grpc-blackhole", "grpc-blackhole", None, "504|503", "DEADLINE_EXCEEDED|UNAVAILABLE"),
]


@pytest.mark.parametrize("case", CASES)
async def test_a_faulty_predictor_gets_clear_errors_and_leaks_nothing(
    rig: Rig, case: Fault
) -> None:
    watch = rig.gateways[case.gateway]
    assert watch.baseline is not None
    before = watch.baseline
    client_timeout = TIMEOUT + HANG_AFTER
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{watch.server.grpc_port}") as channel,
    ):
        rest_probes = [Probe.new(case.size) for _ in range(AT_ONCE)]
        grpc_probes = [Probe.new(case.size) for _ in range(AT_ONCE)]
        outcomes: list[Outcome] = await asyncio.gather(
            *(
                rest_call(
                    session,
                    watch.server.base_url,
                    probe,
                    fault=case.header(probe),
                    timeout=client_timeout,
                )
                for probe in rest_probes
            ),
            *(
                grpc_call(channel, probe, fault=case.header(probe), timeout=client_timeout)
                for probe in grpc_probes
            ),
        )
        # The gateway keeps serving: a good request right after succeeds. (A blackhole
        # gateway has no good predictor: its own endpoints must still answer.)
        if "blackhole" in case.gateway:
            serving = await _live(session, watch.server)
        else:
            url = watch.server.base_url
            good = [
                await rest_call(session, url, Probe.new(), timeout=client_timeout),
                await grpc_call(channel, Probe.new(), timeout=client_timeout),
            ]
            serving = all(outcome.ok for outcome in good)
    used = await watch.settled(pool=POOL)
    report(
        "fault",
        fault=case.id,
        upstream=case.gateway,
        sent=len(outcomes),
        lost=sum(o.kind not in case.rest | case.grpc for o in outcomes),
        seen=kinds(outcomes),
        max_seconds=round(max(o.elapsed for o in outcomes), 2),
        **delta(before, used),
    )

    for outcome in outcomes:
        expected = case.rest if outcome.transport == "rest" else case.grpc
        assert outcome.kind in expected, outcome
        assert outcome.elapsed < TIMEOUT + MARGIN, outcome
        if case.retry_after is not None:
            assert outcome.retry_after == case.retry_after, outcome
    assert serving, "the gateway stopped serving"
    assert watch.within(used, POOL), (before, used)


async def _live(session: aiohttp.ClientSession, server: ServerProcess) -> bool:
    async with session.get(f"{server.base_url}/v2/health/live") as response:
        return response.status == 200


# Retries within the timeout

LATE = 1.0


@pytest.mark.parametrize(("gateway", "code"), [("rest", "503"), ("grpc", "UNAVAILABLE")])
async def test_a_retry_gets_only_what_is_left_of_the_timeout(
    rig: Rig, gateway: str, code: str
) -> None:
    """A predictor that fails slowly with a retryable status: the retry must be given what
    is left of the timeout, not a whole timeout of its own (which would keep the client
    waiting up to twice as long as configured)."""
    watch = rig.gateways[gateway]
    async with (
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{watch.server.grpc_port}") as channel,
    ):
        probes = [Probe.new(), Probe.new()]
        faults = [f"late:{LATE}:{code}:{probe.request_id}" for probe in probes]
        url, timeout = watch.server.base_url, TIMEOUT + HANG_AFTER
        outcomes = [
            await rest_call(session, url, probes[0], fault=faults[0], timeout=timeout),
            await grpc_call(channel, probes[1], fault=faults[1], timeout=timeout),
        ]
        told = []
        for probe in probes:
            address = f"http://127.0.0.1:{rig.faults.http_port}/faults/told/{probe.request_id}"
            async with session.get(address) as response:
                told.append(await response.json())
    report(
        "retry-budget",
        fault=f"fails after {LATE} s with {code}, retried (2 retries)",
        upstream=gateway,
        seen=kinds(outcomes),
        seconds=[round(o.elapsed, 2) for o in outcomes],
        attempts_given_seconds=told,
        timeout=TIMEOUT,
    )
    for outcome, given in zip(outcomes, told, strict=True):
        # The second attempt ran out of time (504) or there was none left to wait for (503).
        expected = (
            {"504", "503"}
            if outcome.transport == "rest"
            else {
                "DEADLINE_EXCEEDED",
                "UNAVAILABLE",
            }
        )
        assert outcome.kind in expected, outcome
        assert outcome.elapsed < TIMEOUT + MARGIN, outcome
        assert given[0] <= TIMEOUT + GRPC_ROUNDING, given
        # At least LATE seconds had gone when a retry began: it gets at most the rest.
        assert all(seconds <= TIMEOUT - LATE + GRPC_ROUNDING for seconds in given[1:]), given
