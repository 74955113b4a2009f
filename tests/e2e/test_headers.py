"""Header hygiene across a real gateway: what reaches the predictor, and what comes back.

- ``x-request-id``: the client's, or one the gateway makes; echoed to the client and the
  same one sent to the predictor, on every path (pass-through or decoded, REST or gRPC).
- ``Authorization`` is credentials for the gateway: passed on only with
  ``--forward_authorization true``, and never echoed back to the client.
- Hop-by-hop headers (Connection, Keep-Alive, TE, Trailer, Upgrade, Proxy-*) are never passed
  on, even when ``--forward_headers`` names them; ``--forward_headers x-tenant`` passes on
  that one and nothing else.
- A header value with CR or LF cannot reach the predictor: HTTP and gRPC clients cannot send
  one (the servers' parsers refuse it), and a transformer that puts one into the headers it
  forwards gets a 400 before anything is sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import numpy as np
import orjson
import pytest
from aiohttp import web

from gateway import InferInput, InferRequest
from gateway._proto import pb
from gateway.model import Model
from tests.e2e.support import (
    MODEL,
    Gateway,
    Seen,
    gateway_to,
    grpc_infer,
    grpc_upstream,
    rest_upstream,
)

Context = grpc.aio.ServicerContext[bytes, bytes]
BODY = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
V1_BODY = orjson.dumps({"instances": [1.0, 2.0]})
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
HOP_BY_HOP = {
    "connection": "keep-alive",
    "keep-alive": "timeout=77",
    "te": "trailers",
    "trailer": "x-checksum",
    "upgrade": "h2c",
    "proxy-authorization": "Basic c2VjcmV0",
    "proxy-connection": "keep-alive",
}
# gRPC itself drops a client's TE; the rest are legal metadata it would carry.
GRPC_HOP_BY_HOP = {k: v for k, v in HOP_BY_HOP.items() if k != "te"}
SECRET = "Bearer gateway-credentials"


async def rest_answer(request: web.Request, hit: int) -> web.StreamResponse:
    # An upstream that sends credentials of its own back must not leak them to the client.
    headers = {"Authorization": "Bearer upstream", "WWW-Authenticate": "Bearer"}
    if request.path.endswith(":predict"):
        return web.json_response({"predictions": [1.0, 2.0]}, headers=headers)
    answer = {
        "model_name": MODEL,
        "outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
    }
    return web.json_response(answer, headers=headers)


async def grpc_answer(data: bytes, context: Context, hit: int) -> bytes:
    await context.send_initial_metadata((("authorization", "Bearer upstream"),))
    message = pb.ModelInferResponse(model_name=MODEL)
    message.outputs.add(name="y", datatype="FP32", shape=[2])
    message.raw_output_contents.append(np.array([1, 2], dtype=np.float32).tobytes())
    return message.SerializeToString()


def upstream(protocol: str) -> AbstractAsyncContextManager[tuple[str, Seen]]:
    """A recording upstream speaking `protocol`."""
    return grpc_upstream(grpc_answer) if protocol == "grpc-v2" else rest_upstream(rest_answer)


@dataclass(frozen=True)
class Setup:
    gateway: Gateway
    seen: Seen
    protocol: str


@pytest.fixture(params=["v1", "v2", "grpc-v2"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """A recording upstream of each protocol, behind a gateway forwarding x-tenant."""
    protocol: str = request.param
    async with AsyncExitStack() as stack:
        address, seen = await stack.enter_async_context(upstream(protocol))
        gw = await stack.enter_async_context(
            # Hop-by-hop names are listed to show that listing them does not pass them on.
            gateway_to(address, protocol, "--forward_headers", "x-tenant," + ",".join(HOP_BY_HOP))
        )
        yield Setup(gw, seen, protocol)


@dataclass(frozen=True)
class Answer:
    status: Any  # HTTP status, or gRPC code
    headers: dict[str, str]  # lower-case; gRPC: initial and trailing metadata


async def rest_call(gw: Gateway, protocol: str, headers: dict[str, str]) -> Answer:
    if protocol == "v1":
        url, body = f"{gw.base_url}/v1/models/{MODEL}:predict", V1_BODY
    else:
        url, body = f"{gw.base_url}/v2/models/{MODEL}/infer", BODY
    # A session of its own that adds no headers, so that the ones given are the ones sent.
    async with (
        aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session,
        session.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as r,
    ):
        await r.read()
        return Answer(r.status, {k.lower(): v for k, v in r.headers.items()})


async def grpc_call(gw: Gateway, metadata: dict[str, str]) -> Answer:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    async with grpc.aio.insecure_channel(gw.grpc) as channel:
        call = grpc_infer(channel)(
            InferRequest(MODEL, [tensor]).to_grpc_bytes(),
            metadata=tuple(metadata.items()),
            timeout=10,
        )
        await call
        received = [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]
        return Answer(await call.code(), {k: v for k, v in received if isinstance(v, str)})


async def test_x_request_id_is_made_when_missing_echoed_and_forwarded(setup: Setup) -> None:
    answers = [
        await rest_call(setup.gateway, setup.protocol, {}),
        await rest_call(setup.gateway, setup.protocol, {"x-request-id": "client-id-1"}),
        await grpc_call(setup.gateway, {}),
        await grpc_call(setup.gateway, {"x-request-id": "client-id-2"}),
    ]
    assert [a.status for a in answers] == [200, 200, grpc.StatusCode.OK, grpc.StatusCode.OK]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert GENERATED_ID.fullmatch(ids[0]), ids
    assert GENERATED_ID.fullmatch(ids[2]), ids
    assert ids[1:4:2] == ["client-id-1", "client-id-2"]
    assert ids[0] != ids[2]
    assert [seen["x-request-id"] for seen in setup.seen.headers] == ids


async def test_authorization_is_not_forwarded_by_default_nor_echoed(setup: Setup) -> None:
    answers = await asyncio.gather(
        rest_call(setup.gateway, setup.protocol, {"Authorization": SECRET}),
        grpc_call(setup.gateway, {"authorization": SECRET}),
    )
    for answer in answers:
        assert "authorization" not in answer.headers
        assert "www-authenticate" not in answer.headers
    assert setup.seen.hits == 2
    assert all("authorization" not in headers for headers in setup.seen.headers)


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
async def test_authorization_is_forwarded_when_asked_and_never_echoed(protocol: str) -> None:
    async with AsyncExitStack() as stack:
        address, seen = await stack.enter_async_context(upstream(protocol))
        gw = await stack.enter_async_context(
            gateway_to(address, protocol, "--forward_authorization", "true")
        )
        answers = await asyncio.gather(
            rest_call(gw, protocol, {"Authorization": SECRET}),
            grpc_call(gw, {"authorization": SECRET}),
        )
    for answer in answers:
        assert "authorization" not in answer.headers
    assert [headers["authorization"] for headers in seen.headers] == [SECRET, SECRET]


async def test_hop_by_hop_headers_never_pass_and_forward_headers_do(setup: Setup) -> None:
    own = {"x-tenant": "acme", "x-other": "not listed"}
    answers = [
        await rest_call(setup.gateway, setup.protocol, {**HOP_BY_HOP, **own}),
        await grpc_call(setup.gateway, {**GRPC_HOP_BY_HOP, **own}),
    ]
    assert [answer.status for answer in answers] == [200, grpc.StatusCode.OK]
    assert setup.seen.hits == 2
    for headers in setup.seen.headers:
        assert headers["x-tenant"] == "acme"
        assert "x-other" not in headers
        for name, value in HOP_BY_HOP.items():
            # The gateway's own HTTP client may open its connection as it likes.
            assert headers.get(name) != value, (name, headers)
        assert not set(headers) & {"keep-alive", "te", "trailer", "upgrade"}, headers
        assert not set(headers) & {"proxy-authorization", "proxy-connection"}, headers


async def test_a_header_value_with_cr_or_lf_cannot_be_sent_by_clients(setup: Setup) -> None:
    host, port = setup.gateway.http.split(":")
    path = f"/v1/models/{MODEL}:predict" if setup.protocol == "v1" else f"/v2/models/{MODEL}/infer"
    for header in (b"X-Tenant: a\r\n injected: 1", b"X-Tenant: a\rX-Injected: 1"):
        reader, writer = await asyncio.open_connection(host, int(port))
        body = V1_BODY if setup.protocol == "v1" else BODY
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n\r\n%s" % (path.encode(), len(body), header, body)
        )
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        assert status_line.startswith(b"HTTP/1.0 400 ") or status_line.startswith(b"HTTP/1.1 400 ")
    with pytest.raises(Exception, match="execute_batch"):  # refused by grpc before sending
        await grpc_call(setup.gateway, {"x-tenant": "a\r\nx-injected: 1"})
    assert setup.seen.hits == 0


class Injecting(Model):
    """A transformer that forwards a header value with a line break in it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        forged = {**(headers or {}), "x-tenant": "acme\r\nx-injected: 1"}
        return await super().predict(payload, forged)


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
async def test_a_header_value_with_cr_or_lf_from_a_transformer_is_refused(protocol: str) -> None:
    async with AsyncExitStack() as stack:
        address, seen = await stack.enter_async_context(upstream(protocol))
        gw = await stack.enter_async_context(
            gateway_to(address, protocol, "--forward_headers", "x-tenant", model=Injecting(MODEL))
        )
        url = f"{gw.base_url}/v2/models/{MODEL}/infer"
        async with aiohttp.ClientSession() as session, session.post(url, data=BODY) as response:
            assert response.status == 400
            assert await response.json() == {"error": "header 'x-tenant' contains a line break"}
    assert seen.hits == 0


async def test_headers_named_in_connection_do_not_pass_whatever_their_name(setup: Setup) -> None:
    client_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    named = {
        "connection": "x-request-id, traceparent, x-tenant",
        "x-request-id": "client-id",
        "traceparent": client_trace,
        "x-tenant": "acme",
    }
    answer = await rest_call(setup.gateway, setup.protocol, named)
    assert answer.status == 200
    assert GENERATED_ID.fullmatch(answer.headers["x-request-id"]), answer.headers
    (seen,) = setup.seen.headers
    assert seen["x-request-id"] == answer.headers["x-request-id"]
    assert seen.get("traceparent") != client_trace
    assert "x-tenant" not in seen


async def test_a_request_id_with_a_line_separator_or_too_long_is_replaced(setup: Setup) -> None:
    answers = [
        await rest_call(setup.gateway, setup.protocol, {"x-request-id": "a\x85forged"}),
        await rest_call(setup.gateway, setup.protocol, {"x-request-id": "i" * 4096}),
        await grpc_call(setup.gateway, {"x-request-id": "i" * 4096}),
    ]
    assert [a.status for a in answers] == [200, 200, grpc.StatusCode.OK]
    for answer in answers:
        assert GENERATED_ID.fullmatch(answer.headers["x-request-id"]), answer.headers
    assert [seen["x-request-id"] for seen in setup.seen.headers] == [
        answer.headers["x-request-id"] for answer in answers
    ]


async def test_oversized_forwarded_headers_are_refused_before_the_call(setup: Setup) -> None:
    big = {"tracestate": "k=" + "v" * 8000}
    rest = await rest_call(setup.gateway, setup.protocol, big)
    assert rest.status == 400
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await grpc_call(setup.gateway, big)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tracestate" in (refused.value.details() or "")
    assert "limit" in (refused.value.details() or "")
    assert setup.seen.hits == 0
