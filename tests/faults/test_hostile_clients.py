"""Hostile clients against a real gateway process: clients that never read their large
answers, and the liveness probe while the largest request the limits allow is decoded.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import aiohttp
import grpc
import numpy as np
import orjson
import pytest

from gateway import InferInput, InferRequest
from gateway._proto import SERVICE_NAME
from tests.e2e.support import MODEL, gateway_command, predictor_command, start_servers
from tests.faults.support import report, usage
from tests.server.procs import ServerProcess

READERS = 6
# Each asks for an answer this large (the echo of its own input) and never reads it.
VALUES = 1_000_000  # the default limit on values in one request
ANSWER_VALUES = VALUES - 16  # FP32 values: about 7 MB of JSON each way


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerProcess]:
    with ExitStack() as stack:
        (predictor,) = start_servers(stack, predictor_command())
        # A gRPC predictor: REST requests are decoded and bridged; gRPC ones pass through.
        address = f"127.0.0.1:{predictor.grpc_port}"
        flags = ("--write_timeout", "1")
        (gateway,) = start_servers(stack, gateway_command(address, "grpc-v2", *flags))
        yield gateway


def _request(body: bytes) -> bytes:
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: gw\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _closed_for(gateway: ServerProcess, reasons: tuple[str, ...]) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.base_url}/metrics") as answer,
    ):
        text = await answer.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_connections_closed_total{") and any(
            f'reason="{reason}"' in line for reason in reasons
        ):
            total += float(line.split()[-1])
    return total


async def test_clients_that_never_read_are_cut_and_memory_comes_back(
    gateway: ServerProcess,
) -> None:
    data = list(range(ANSWER_VALUES))
    tensor = {"name": "x", "shape": [ANSWER_VALUES], "datatype": "FP32", "data": data}
    request = _request(orjson.dumps({"inputs": [tensor]}))
    before = usage(gateway.process.pid)
    reasons = ("write_timeout", "write_buffer")
    closed_before = await _closed_for(gateway, reasons)
    readers = []
    for _ in range(READERS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.http_port))
        sock.sendall(request)
        readers.append(sock)  # and never read
    try:
        deadline = time.monotonic() + 60
        while await _closed_for(gateway, reasons) < closed_before + READERS:
            assert time.monotonic() < deadline, gateway.output()[-2000:]
            await asyncio.sleep(0.2)
        peak = usage(gateway.process.pid)
    finally:
        for sock in readers:
            sock.close()
    # Trimmed every few seconds (gateway.server.allocator): wait for a trim, boundedly.
    near = before.rss_mib + 96
    for _ in range(100):
        after = usage(gateway.process.pid)
        if after.rss_mib < near:
            break
        await asyncio.sleep(0.2)
    report(
        "slow_readers",
        readers=READERS,
        answer_bytes_each=len(request),
        rss_mib_before=before.rss_mib,
        rss_mib_while_cut=peak.rss_mib,
        rss_mib_after=after.rss_mib,
    )
    # Every answer was dropped with its connection, and the heap given back: near the baseline.
    assert after.rss_mib < near, (before, peak, after)


# What each door can carry at the limits' defaults, each decoded value by value: the largest
# BYTES tensor the value limit allows (one Python step per element), a v1 instance with as many
# keys as the key limit allows (a column each), and 1M numbers.
KEYS = 100_000  # the default limit on object members


def _v2_bytes() -> tuple[str, bytes]:
    count = VALUES - 16
    tensor = {"name": "x", "shape": [count], "datatype": "BYTES", "data": [""] * count}
    return f"/v2/models/{MODEL}/infer", orjson.dumps({"inputs": [tensor]})


def _v2_numbers() -> tuple[str, bytes]:
    count = VALUES - 16
    tensor = {"name": "x", "shape": [count], "datatype": "FP32", "data": [0.5] * count}
    return f"/v2/models/{MODEL}/infer", orjson.dumps({"inputs": [tensor]})


def _v1_keys() -> tuple[str, bytes]:
    rows = [{"k": i} for i in range(KEYS - 16)]
    return f"/v1/models/{MODEL}:predict", orjson.dumps({"instances": rows})


def _grpc_bytes() -> bytes:
    count = VALUES - 16
    tensor = InferInput("x", [count], "BYTES")
    tensor.set_data_from_numpy(np.array([b""] * count, dtype=np.object_))
    return InferRequest(MODEL, [tensor]).to_grpc_bytes()


async def _grpc(port: int, data: bytes) -> str:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=(("grpc.max_send_message_length", 1 << 30),)
    ) as channel:
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
        try:
            await infer(data, timeout=120)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "OK"


async def _rest(gateway: ServerProcess, path: str, body: bytes) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.base_url}{path}",
            data=io.BytesIO(body),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as response,
    ):
        text = (await response.read())[:300]
        return "OK" if response.status == 200 else f"{response.status}: {text!r}"


@pytest.mark.parametrize("case", ["v2 BYTES", "v2 numbers", "v1 keys", "gRPC BYTES"])
async def test_liveness_is_answered_while_a_large_request_is_decoded(
    gateway: ServerProcess, case: str
) -> None:
    """REST requests are decoded, bridged to the gRPC predictor and their answers encoded; the
    gRPC one passes through, checked at the door (its BYTES elements counted one by one)."""
    # Built before the probes start: this process's own loop must not hold them up.
    makers = {"v2 BYTES": _v2_bytes, "v2 numbers": _v2_numbers, "v1 keys": _v1_keys}
    if case in makers:
        big = asyncio.ensure_future(_rest(gateway, *makers[case]()))
    else:
        big = asyncio.ensure_future(_grpc(gateway.grpc_port, _grpc_bytes()))
    latencies: list[float] = []
    during = 0
    async with aiohttp.ClientSession() as probes:
        for _ in range(3000):  # bounded: the big request ends well before
            if big.done():
                break
            started = time.monotonic()
            async with probes.get(f"{gateway.base_url}/v2/health/live") as answer:
                assert answer.status == 200
            latencies.append(time.monotonic() - started)
            during += not big.done()
            await asyncio.sleep(0.005)
    outcome = await big
    report(
        "loop_probe",
        case=case,
        probes_during=during,
        worst_probe_ms=round(1000 * max(latencies), 1),
    )
    assert outcome == "OK", outcome
    # Answered all along: many probes came back while the request was in flight (with the
    # decode on the event loop they would all queue behind it).
    assert during >= 5, latencies
