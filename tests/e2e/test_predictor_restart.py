"""A predictor that crashes and comes back on the same port: the gateway recovers by itself.

While the predictor is gone, clients get 503 / UNAVAILABLE at once (not a hang); once it
listens again, requests through the same gateway (not restarted) succeed: at once over REST,
whose pool drops the dead connections, and within gRPC's reconnect backoff (at most 5 s, see
`gateway.hops.grpc.CHANNEL_OPTIONS`) over gRPC.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, ExitStack

import aiohttp
import grpc
import numpy as np
import orjson

from gateway import InferInput, InferRequest
from tests.e2e.support import (
    MODEL,
    PROTOCOLS,
    Gateway,
    gateway_to,
    grpc_infer,
    predictor_command,
    start_servers,
)
from tests.hops.upstreams import free_port

BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}]}
)
# gRPC's longest wait between reconnection attempts, and time to spare.
RECONNECT_WITHIN = 5.0 + 2.0


async def rest_status(gw: Gateway) -> int:
    url = f"{gw.base_url}/v2/models/{MODEL}/infer"
    async with aiohttp.ClientSession() as session, session.post(url, data=BODY) as response:
        await response.read()
        return response.status


async def grpc_status(gw: Gateway) -> grpc.StatusCode:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.5, 2.5], dtype=np.float32))
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        try:
            await grpc_infer(channel)(InferRequest(MODEL, [tensor]).to_grpc_bytes(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def test_the_gateway_recovers_when_the_predictor_restarts_on_the_same_port() -> None:
    ports = ("--http_port", str(free_port()), "--grpc_port", str(free_port()))
    command = predictor_command(*ports)
    http, grpc_port = ports[1], ports[3]
    with ExitStack() as processes:
        async with AsyncExitStack() as stack:
            first = ExitStack()
            processes.push(first.__exit__)
            await asyncio.to_thread(start_servers, first, command)
            gateways = {}
            for protocol in PROTOCOLS:
                address = f"127.0.0.1:{grpc_port if protocol == 'grpc-v2' else http}"
                gateways[protocol] = await stack.enter_async_context(gateway_to(address, protocol))
            for gw in gateways.values():
                assert await rest_status(gw) == 200
                assert await grpc_status(gw) == grpc.StatusCode.OK

            await asyncio.to_thread(first.close)  # SIGKILL: a crash, connections and all
            for protocol, gw in gateways.items():
                assert await rest_status(gw) == 503, protocol
                assert await grpc_status(gw) == grpc.StatusCode.UNAVAILABLE, protocol

            await asyncio.to_thread(start_servers, processes, command)
            for protocol in ("v1", "v2"):  # the first request after the restart succeeds
                assert await rest_status(gateways[protocol]) == 200, protocol
                assert await grpc_status(gateways[protocol]) == grpc.StatusCode.OK, protocol
            started = time.monotonic()
            while (status := await grpc_status(gateways["grpc-v2"])) != grpc.StatusCode.OK:
                assert status == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < RECONNECT_WITHIN, "the channel never came back"
                await asyncio.sleep(0.1)
            assert await rest_status(gateways["grpc-v2"]) == 200
