"""Real server processes: readiness after load, graceful drain on SIGTERM, several workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from gateway import InferInput, InferRequest, InferResponse
from gateway._proto import SERVICE_NAME
from tests.hops.upstreams import make_authority
from tests.server.procs import ServerProcess, run_server

APP = "tests.apps.kserve_style"


def _infer_body() -> bytes:
    tensor = InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(np.arange(4, dtype=np.float32), binary_data=False)
    body, _ = InferRequest("m", [tensor]).to_rest()
    import orjson

    return orjson.dumps(body)


async def _status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def _wait_ready(session: aiohttp.ClientSession, server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while await _status(session, f"{server.base_url}/v2/health/ready") != 200:
        assert time.monotonic() < deadline, server.output()
        await asyncio.sleep(0.05)


async def test_live_at_once_ready_only_after_every_model_loads() -> None:
    with run_server(APP, "--http_port", "0", "--grpc_port", "0", "--load_delay", "1.5") as server:
        async with aiohttp.ClientSession() as session:
            assert await _status(session, f"{server.base_url}/v2/health/live") == 200
            assert await _status(session, f"{server.base_url}/v2/health/ready") == 503
            await _wait_ready(session, server)
            assert await _status(session, f"{server.base_url}/v2/models/model/ready") == 200


async def test_sigterm_lets_in_flight_requests_finish_then_exits() -> None:
    args = ("--http_port", "0", "--grpc_port", "0", "--delay", "1.0", "--grace_period", "10")
    with run_server(APP, *args) as server:
        body = _infer_body()
        url = f"{server.base_url}/v2/models/model/infer"
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
        grpc_request = InferRequest.from_bytes(body, None, "model").to_grpc_bytes()
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, server)

            async def post() -> tuple[int, bytes]:
                # A session each: one connection per request.
                async with aiohttp.ClientSession() as own, own.post(url, data=body) as response:
                    return response.status, await response.read()

            rest_calls = [asyncio.create_task(post()) for _ in range(8)]
            grpc_calls = [asyncio.ensure_future(infer(grpc_request, timeout=20)) for _ in range(4)]
            await asyncio.sleep(0.4)  # all of them are now waiting inside predict
            server.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            # Not ready at once: the listener is closed, so a probe cannot connect.
            assert await _status(session, f"{server.base_url}/v2/health/ready") in (None, 503)
            results = await asyncio.gather(*rest_calls)
            answers = await asyncio.gather(*grpc_calls)
        await channel.close()
        for status, payload in results:
            assert status == 200
            assert b'"data":[0.0,1.0,2.0,3.0]' in payload
        for answer in answers:
            response = InferResponse.from_grpc_bytes(answer)
            assert response.outputs[0].as_numpy().tolist() == [0.0, 1.0, 2.0, 3.0]
        assert await asyncio.to_thread(server.wait, 15) == 0
        assert "stopped" in server.output()


def _samples(metrics: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of `name` whose labels include `labels`: (their labels, value)."""
    found = []
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{([^}}]*)\}} (\S+)", line)
        if match:
            sample = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.items() <= sample.items():
                found.append((sample, float(match.group(2))))
    return found


def _served(metrics: str) -> dict[str, float]:
    """Requests answered for "model", by worker pid."""
    by_pid: dict[str, float] = {}
    for sample, value in _samples(metrics, "gateway_requests_total", model_name="model"):
        by_pid[sample["pid"]] = by_pid.get(sample["pid"], 0.0) + value
    return by_pid


def _children(pid: int) -> set[str]:
    """The pids of the processes `pid` started."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # a process that ended meanwhile
            continue
        if int(fields[1]) == pid:  # ppid, the field after the state
            children.add(stat.parent.name)
    return children


async def _metrics(base_url: str) -> str:
    # A fresh connection: any worker may answer, and each must see every worker's figures.
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as response:
        assert response.status == 200
        return await response.text()


@pytest.mark.timeout(90)
async def test_workers_share_the_port_and_their_metrics_add_up() -> None:
    # A real predictor behind the workers: every request makes a hop.
    with run_server(APP, "--http_port", "0", "--grpc_port", "0") as predictor:
        gateway = ("gateway", "serve", "--model_name", "model", "--http_port", "0",
                   "--grpc_port", "0", "--workers", "2", "--predictor_protocol", "v2",
                   "--predictor_host", f"127.0.0.1:{predictor.http_port}")  # fmt: skip
        with run_server(*gateway) as server:
            async with aiohttp.ClientSession() as session:
                await _wait_ready(session, predictor)
                await _wait_ready(session, server)
            workers = _children(server.process.pid)
            assert len(workers) == 2, server.output()
            url = f"{server.base_url}/v2/models/model/infer"
            body = _infer_body()
            grpc_request = InferRequest.from_bytes(body, None, "model").to_grpc_bytes()
            sent, served = 0, {}
            # The kernel gives each new connection to one worker or the other: send, each
            # request on a fresh connection, until both have served (a bounded number of tries).
            for _ in range(50):
                async with aiohttp.ClientSession() as session, session.post(url, data=body) as rest:
                    assert rest.status == 200
                async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                    await channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")(
                        grpc_request, timeout=10
                    )
                sent += 2
                served = _served(await _metrics(server.base_url))
                if len(served) == len(workers):
                    break
            # Each worker served: its own series, under its own pid.
            assert set(served) == workers, (served, workers)
            assert all(count > 0 for count in served.values())
            for _ in range(4):
                metrics = await _metrics(server.base_url)
                assert sum(_served(metrics).values()) == sent
                hops = _samples(metrics, "gateway_hop_seconds_count", model_name="model")
                assert {sample["hop"] for sample, _ in hops} == {"predictor"}
                assert sum(count for _, count in hops) == sent
            server.signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.wait, 30) == 0


@pytest.mark.timeout(90)
async def test_a_killed_worker_is_replaced_and_the_server_is_not_ready_meanwhile() -> None:
    with run_server(APP, "--http_port", "0", "--grpc_port", "0", "--workers", "2") as server:
        ready = f"{server.base_url}/v2/health/ready"
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, server)
            before = _children(server.process.pid)
            assert len(before) == 2, server.output()
            victim = int(sorted(before)[0])
            os.kill(victim, signal.SIGKILL)
            # Until the replacement runs (half a second at the least), the survivor says
            # not ready; its answer is the first one after the kill.
            deadline = time.monotonic() + 5
            while (status := await _status(session, ready)) == 200:
                assert time.monotonic() < deadline, (
                    "still ready with one worker of two",
                    _children(server.process.pid),
                    [line for line in server.output().splitlines() if "access" not in line],
                )
                await asyncio.sleep(0.02)
            assert status == 503
            await _wait_ready(session, server)
        after = _children(server.process.pid)
        assert len(after) == 2, (before, after)
        assert str(victim) not in after, (before, after)
        assert "replacing it" in server.output()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0, server.output()[-2000:]


async def test_tls_flags_secure_the_grpc_port_as_well_as_rest(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    ca = await asyncio.to_thread(Path(authority.ca_file).read_bytes)
    tls = ("--ssl_certfile", authority.cert_file, "--ssl_keyfile", authority.key_file)
    with run_server(APP, "--http_port", "0", "--grpc_port", "0", *tls) as server:
        address = f"127.0.0.1:{server.grpc_port}"
        live = f"/{SERVICE_NAME}/ServerLive"
        async with grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)) as channel:
            assert await channel.unary_unary(live)(b"", timeout=10) == b"\x08\x01"  # live: true
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(live)(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        context = ssl.create_default_context(cafile=authority.ca_file)
        url = f"https://127.0.0.1:{server.http_port}/v2/health/live"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as answer:
            assert answer.status == 200
