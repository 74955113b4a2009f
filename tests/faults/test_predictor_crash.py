"""A predictor killed (SIGKILL) while requests are in flight, then restarted on its port.

Real processes throughout: the echo predictor (`tests.apps.kserve_style`, answering after
a delay so that requests are surely inside it) and two ``gateway serve`` processes in front
of it, one over REST v2 and one over gRPC. The requests in flight when the predictor dies
must fail with a clear error at once (not at the timeout), the gateways must answer
503 / UNAVAILABLE while it is gone, and recover by themselves when it is back; their
descriptors and RSS must come back to their baselines.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack

import aiohttp
import grpc

from tests.e2e.support import gateway_command, predictor_command, start_servers
from tests.faults.support import (
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
    until_in_flight,
)
from tests.hops.upstreams import free_port

TIMEOUT = 10.0
DELAY = 1.0
POOL = 8
FLAGS = (
    "--predictor_request_timeout_seconds", str(TIMEOUT),
    "--predictor_request_retries", "2",
    "--predictor_max_connections", str(POOL),
)  # fmt: skip
AT_ONCE = 3
# gRPC's longest wait between reconnection attempts (gateway.hops.grpc), and time to spare.
RECONNECT_WITHIN = 5.0 + MARGIN
# What a request caught in flight may get: the connection broke (502 / INTERNAL), or, over
# gRPC, UNAVAILABLE retried until the predictor was found gone (503).
IN_FLIGHT = {"rest": {"502", "503"}, "grpc": {"INTERNAL", "UNAVAILABLE"}}
GONE = {"rest": {"503"}, "grpc": {"UNAVAILABLE"}}


async def _calls(
    session: aiohttp.ClientSession, channels: dict[str, grpc.aio.Channel], watches: dict[str, Watch]
) -> list[Outcome]:
    timeout = TIMEOUT + HANG_AFTER
    calls = []
    for name, watch in watches.items():
        for _ in range(AT_ONCE):
            calls.append(rest_call(session, watch.server.base_url, Probe.new(), timeout=timeout))
            calls.append(grpc_call(channels[name], Probe.new(), timeout=timeout))
    return list(await asyncio.gather(*calls))


async def test_sigkill_mid_request_then_restart_on_the_same_port() -> None:
    ports = ("--http_port", str(free_port()), "--grpc_port", str(free_port()))
    slow = predictor_command(*ports, "--delay", str(DELAY))
    rest_at, grpc_at = f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[3]}"
    gateways = (gateway_command(rest_at, "v2", *FLAGS), gateway_command(grpc_at, "grpc-v2", *FLAGS))
    with ExitStack() as processes:
        first = ExitStack()
        processes.push(first.__exit__)
        (predictor,), servers = await asyncio.gather(
            asyncio.to_thread(start_servers, first, slow),
            asyncio.to_thread(start_servers, processes, *gateways),
        )
        upstream = (int(ports[1]), int(ports[3]))
        watches = {
            name: Watch(s, upstream) for name, s in zip(("v2", "grpc-v2"), servers, strict=True)
        }
        channels = {
            name: grpc.aio.insecure_channel(f"127.0.0.1:{w.server.grpc_port}")
            for name, w in watches.items()
        }
        try:
            async with aiohttp.ClientSession() as session:
                warm = await _calls(session, channels, watches)
                assert all(o.ok for o in warm), kinds(warm)
                baselines = await asyncio.gather(*(quiet(w) for w in watches.values()))
                for watch, baseline in zip(watches.values(), baselines, strict=True):
                    watch.baseline = baseline

                in_flight = asyncio.ensure_future(_calls(session, channels, watches))
                for watch in watches.values():
                    await until_in_flight(session, watch.server, 2 * AT_ONCE)
                killed = time.monotonic()
                await asyncio.to_thread(first.close)  # SIGKILL, process group and all
                caught = await in_flight
                failed_by = time.monotonic() - killed

                gone = await _calls(session, channels, watches)

                # The same ports; no delay now, so that recovery is quick to see.
                await asyncio.to_thread(start_servers, processes, predictor_command(*ports))
                back = await _recovered(session, channels, watches)
        finally:
            for channel in channels.values():
                await channel.close(None)
        settled = {name: await w.settled(POOL) for name, w in watches.items()}

    for index, (name, watch) in enumerate(watches.items()):
        assert watch.baseline is not None
        mine = slice(2 * AT_ONCE * index, 2 * AT_ONCE * (index + 1))  # _calls' order
        report(
            "crash",
            fault=f"predictor SIGKILLed mid-request, restarted ({name} predictor)",
            sent=len(caught[mine]) + len(gone[mine]) + len(back[name]),
            in_flight=kinds(caught[mine]),
            while_gone=kinds(gone[mine]),
            failed_within_seconds=round(failed_by, 2),
            recovered_after_calls=len(back[name]),
            **delta(watch.baseline, settled[name]),
        )
    assert predictor.process.poll() is not None
    for outcome in caught:
        assert outcome.kind in IN_FLIGHT[outcome.transport], outcome
    # The broken connections were noticed: nobody waited for the timeout.
    assert failed_by < TIMEOUT
    for outcome in gone:
        assert outcome.kind in GONE[outcome.transport], outcome
        assert outcome.elapsed < TIMEOUT, outcome
    for name, watch in watches.items():
        assert back[name][-1].ok, back[name]
        assert watch.within(settled[name], POOL), (watch.baseline, settled[name])


async def _recovered(
    session: aiohttp.ClientSession, channels: dict[str, grpc.aio.Channel], watches: dict[str, Watch]
) -> dict[str, list[Outcome]]:
    """Call each gateway until it answers; over REST the first call after the restart must
    succeed, over gRPC within the channel's reconnect backoff."""
    results: dict[str, list[Outcome]] = {}
    for name, watch in watches.items():
        outcomes: list[Outcome] = []
        started = time.monotonic()
        while True:
            probe = Probe.new()
            timeout = TIMEOUT + HANG_AFTER
            if len(outcomes) % 2 == 0:
                outcome = await rest_call(session, watch.server.base_url, probe, timeout=timeout)
            else:
                outcome = await grpc_call(channels[name], probe, timeout=timeout)
            outcomes.append(outcome)
            if outcome.ok:
                break
            assert name == "grpc-v2", f"the REST predictor's first call failed: {outcome}"
            assert outcome.kind in GONE[outcome.transport], outcome
            assert time.monotonic() - started < RECONNECT_WITHIN, outcomes
            await asyncio.sleep(0.1)
        results[name] = outcomes
    return results
