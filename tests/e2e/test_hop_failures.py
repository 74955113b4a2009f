"""Retries, deadlines and upstream failures, through a real gateway to real upstreams.

The gateway runs in this process, configured by KServe's flags; the upstreams are small
servers in the test (REST: aiohttp, gRPC: grpc.aio) that answer as each test scripts and
count what reached them. Clients: aiohttp (REST v2 JSON) and a raw grpc.aio channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp
import grpc
import numpy as np
import orjson
import pytest
from aiohttp import web

from gateway import InferInput, InferRequest
from gateway._proto import pb
from tests.e2e.support import (
    MODEL,
    Gateway,
    Seen,
    gateway_to,
    grpc_infer,
    grpc_upstream,
    rest_upstream,
)
from tests.hops.upstreams import free_port

Context = grpc.aio.ServicerContext[bytes, bytes]
BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
)
REST_ANSWER = {
    "model_name": MODEL,
    "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [3.0]}],
}
GRPC_ANSWER = pb.ModelInferResponse(
    model_name=MODEL,
    outputs=[pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[1])],
    raw_output_contents=[np.array([3.0], dtype=np.float32).tobytes()],
).SerializeToString()
# The generous margin over the configured timeout that a slow CI machine may need.
MARGIN = 2.0
# gRPC sends a deadline as a coarse timeout rounded up: an upstream may see a little more.
GRPC_ROUNDING = 0.2


def grpc_request() -> bytes:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    return InferRequest(MODEL, [tensor]).to_grpc_bytes()


@dataclass(frozen=True)
class RestAnswer:
    status: int
    body: Any
    headers: Any


async def rest_call(gw: Gateway, headers: dict[str, str] | None = None) -> RestAnswer:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.base_url}/v2/models/{MODEL}/infer",
            data=BODY,
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response,
    ):
        return RestAnswer(response.status, orjson.loads(await response.read()), response.headers)


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode
    details: str | None
    trailers: dict[str, str]


def text_metadata(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata or () if isinstance(value, str)}


async def grpc_call(gw: Gateway, timeout: float | None = 10.0) -> GrpcAnswer:
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        call = grpc_infer(channel)(grpc_request(), timeout=timeout)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            return GrpcAnswer(exc.code(), exc.details(), text_metadata(exc.trailing_metadata()))
        trailers = text_metadata(await call.trailing_metadata())
        return GrpcAnswer(grpc.StatusCode.OK, None, trailers)


def failing_rest(failures: int, status: int, headers: dict[str, str] | None = None) -> Any:
    """Answer `status` with ``{"error": ...}`` `failures` times, then succeed."""

    async def behaviour(request: web.Request, hit: int) -> web.StreamResponse:
        if hit <= failures:
            error = {"error": f"warming up ({hit})"}
            return web.json_response(error, status=status, headers=headers)
        return web.json_response(REST_ANSWER)

    return behaviour


def failing_grpc(failures: int, code: grpc.StatusCode, trailers: tuple[Any, ...] = ()) -> Any:
    async def behaviour(data: bytes, context: Context, hit: int) -> bytes:
        if hit <= failures:
            await context.abort(code, f"warming up ({hit})", trailers)
        return GRPC_ANSWER

    return behaviour


RETRY = ("--predictor_request_retries", "3", "--retry_backoff_initial", "0.01")


# Retries


async def test_rest_503s_are_retried_until_the_predictor_answers() -> None:
    async with (
        rest_upstream(failing_rest(2, 503)) as (address, seen),
        gateway_to(address, "v2", *RETRY) as gw,
    ):
        answer = await rest_call(gw)
    assert answer.status == 200, answer.body
    assert answer.body == REST_ANSWER
    # Passed through as the predictor (aiohttp) sent it, charset and all.
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert seen.hits == 3


async def test_grpc_unavailable_is_retried_until_the_predictor_answers() -> None:
    async with (
        grpc_upstream(failing_grpc(2, grpc.StatusCode.UNAVAILABLE)) as (address, seen),
        gateway_to(address, "grpc-v2", *RETRY) as gw,
    ):
        answer = await grpc_call(gw)
        rest = await rest_call(gw)
    assert answer.code == grpc.StatusCode.OK, answer
    assert rest.status == 200, rest.body
    assert seen.hits == 3 + 1


async def test_retries_stop_after_the_configured_number() -> None:
    async with (
        rest_upstream(failing_rest(100, 503)) as (address, seen),
        gateway_to(address, "v2", *RETRY) as gw,
    ):
        answer = await rest_call(gw)
    assert answer.status == 503
    assert answer.body == {"error": "warming up (4)"}, "the last attempt's error"
    assert seen.hits == 4


@pytest.mark.parametrize("status", [400, 404, 409, 429])
async def test_rest_4xx_is_never_retried(status: int) -> None:
    async with (
        rest_upstream(failing_rest(100, status)) as (address, seen),
        gateway_to(address, "v2", *RETRY) as gw,
    ):
        # One after the other: the upstream numbers its answers in the order it gets them.
        rest = await rest_call(gw)
        grpc_answer = await grpc_call(gw)
    assert rest.status == status
    if status == 404:  # on the inference path: which URL, and what to check
        url = f"http://{address}/v2/models/m/infer"
        assert rest.body["error"].startswith(f"the predictor answered 404 to POST {url}: ")
        assert "warming up (1) (does it serve the model" in rest.body["error"]
    else:
        assert rest.body == {"error": "warming up (1)"}
    assert grpc_answer.code != grpc.StatusCode.OK
    assert seen.hits == 2, "one attempt for each client"


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND])
async def test_grpc_client_errors_are_never_retried(code: grpc.StatusCode) -> None:
    async with (
        grpc_upstream(failing_grpc(100, code)) as (address, seen),
        gateway_to(address, "grpc-v2", *RETRY) as gw,
    ):
        answer = await grpc_call(gw)
        rest = await rest_call(gw)
    assert answer.code == code
    if code == grpc.StatusCode.NOT_FOUND:  # which call, and what to check
        assert answer.details.startswith("the predictor answered 404 to ModelInfer of model")
        assert "warming up (1) (does it serve the model" in answer.details
    else:
        assert answer.details == "warming up (1)"
    assert rest.status in (400, 404)
    assert rest.body["error"].endswith(
        "warming up (2)"
        if rest.status == 400
        else "warming up (2) (does it serve the model "
        "under that name, and speak grpc-v2? --predictor_protocol sets what the gateway "
        "speaks to it)"
    )
    assert seen.hits == 2, "one attempt for each client"


async def test_without_retries_a_rest_predictor_503_reaches_both_clients() -> None:
    async with (
        rest_upstream(failing_rest(100, 503, {"Retry-After": "7"})) as (address, seen),
        gateway_to(address, "v2") as gw,
    ):
        rest = await rest_call(gw)
        answer = await grpc_call(gw)
    assert rest.status == 503
    assert rest.body == {"error": "warming up (1)"}
    assert rest.headers["Retry-After"] == "7"
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert answer.details == "warming up (2)"
    assert answer.trailers["retry-after"] == "7"
    assert seen.hits == 2


async def test_without_retries_a_grpc_predictor_unavailable_reaches_both_clients() -> None:
    trailers = (("retry-after", "7"),)
    async with (
        grpc_upstream(failing_grpc(100, grpc.StatusCode.UNAVAILABLE, trailers)) as (address, seen),
        gateway_to(address, "grpc-v2") as gw,
    ):
        answer = await grpc_call(gw)
        rest = await rest_call(gw)
    assert (answer.code, answer.details) == (grpc.StatusCode.UNAVAILABLE, "warming up (1)")
    assert answer.trailers["retry-after"] == "7"
    assert rest.status == 503
    assert rest.body == {"error": "warming up (2)"}
    assert rest.headers["Retry-After"] == "7"
    assert seen.hits == 2


# Deadlines


async def answer_rest(request: web.Request, hit: int) -> web.StreamResponse:
    return web.json_response(REST_ANSWER)


async def answer_grpc(data: bytes, context: Context, hit: int) -> bytes:
    return GRPC_ANSWER


def outbound_timeouts(seen: Seen) -> list[float]:
    """What each request told the upstream it had left, in seconds."""
    if seen.remaining:
        return [r for r in seen.remaining if r is not None]
    return [float(headers["x-request-timeout"]) for headers in seen.headers]


@asynccontextmanager
async def both_upstreams(*flags: str) -> AsyncIterator[list[tuple[Gateway, Seen]]]:
    """A REST and a gRPC upstream that answer at once, each behind a gateway."""
    async with AsyncExitStack() as stack:
        rest, rest_seen = await stack.enter_async_context(rest_upstream(answer_rest))
        grpc_address, grpc_seen = await stack.enter_async_context(grpc_upstream(answer_grpc))
        rest_gw = await stack.enter_async_context(gateway_to(rest, "v2", *flags))
        grpc_gw = await stack.enter_async_context(gateway_to(grpc_address, "grpc-v2", *flags))
        yield [(rest_gw, rest_seen), (grpc_gw, grpc_seen)]


async def test_a_grpc_client_deadline_shrinks_the_outbound_timeout() -> None:
    async with both_upstreams("--predictor_request_timeout_seconds", "30") as pairs:
        for gw, seen in pairs:
            assert (await grpc_call(gw, timeout=2.0)).code == grpc.StatusCode.OK
            (timeout,) = outbound_timeouts(seen)
            assert 0 < timeout < 2.0 + GRPC_ROUNDING, "the client's, not the configured 30 s"
            # Without a deadline, the configured timeout is what the upstream is told.
            assert (await grpc_call(gw, timeout=None)).code == grpc.StatusCode.OK
            assert 2.0 < outbound_timeouts(seen)[1] < 30 + GRPC_ROUNDING


@pytest.mark.parametrize(
    ("header", "seconds"), [("x-request-timeout", "2"), ("x-envoy-expected-rq-timeout-ms", "2000")]
)
async def test_a_rest_timeout_header_shrinks_the_outbound_timeout(
    header: str, seconds: str
) -> None:
    async with both_upstreams("--predictor_request_timeout_seconds", "30") as pairs:
        for gw, seen in pairs:
            answer = await rest_call(gw, {header: seconds})
            assert answer.status == 200, answer.body
            (timeout,) = outbound_timeouts(seen)
            assert 0 < timeout < 2.0 + GRPC_ROUNDING, "the client's, not the configured 30 s"


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
async def test_an_unreachable_predictor_is_503_and_unavailable(protocol: str) -> None:
    async with gateway_to(f"127.0.0.1:{free_port()}", protocol) as gw:
        rest, answer = await asyncio.gather(rest_call(gw), grpc_call(gw))
    assert rest.status == 503
    assert rest.body["error"].startswith("cannot connect to the predictor"), rest.body
    assert answer.code == grpc.StatusCode.UNAVAILABLE
    assert answer.details is not None
    assert answer.details.startswith("cannot connect to the predictor"), answer.details


async def test_a_slow_predictor_is_504_and_deadline_exceeded_within_the_timeout() -> None:
    release = asyncio.Event()

    async def slow_rest(request: web.Request, hit: int) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 30)
        return web.json_response(REST_ANSWER)

    async def slow_grpc(data: bytes, context: Context, hit: int) -> NoReturn:
        await asyncio.wait_for(release.wait(), 30)
        raise AssertionError("the gateway should have given up")

    timeout = ("--predictor_request_timeout_seconds", "1")
    async with AsyncExitStack() as stack:
        rest, _ = await stack.enter_async_context(rest_upstream(slow_rest))
        grpc_address, _ = await stack.enter_async_context(grpc_upstream(slow_grpc))
        stack.callback(release.set)  # lets the REST upstream's handlers finish
        gateways = [
            await stack.enter_async_context(gateway_to(rest, "v2", *timeout)),
            await stack.enter_async_context(gateway_to(grpc_address, "grpc-v2", *timeout)),
        ]
        started = time.monotonic()
        results = await asyncio.gather(
            *(rest_call(gw) for gw in gateways), *(grpc_call(gw) for gw in gateways)
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1 + MARGIN
    for rest_answer in results[:2]:
        assert isinstance(rest_answer, RestAnswer)
        assert rest_answer.status == 504
        assert "did not answer within 1.000 s" in rest_answer.body["error"], rest_answer.body
    for grpc_answer in results[2:]:
        assert isinstance(grpc_answer, GrpcAnswer)
        assert grpc_answer.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert grpc_answer.details is not None
        assert "did not answer within 1.000 s" in grpc_answer.details
