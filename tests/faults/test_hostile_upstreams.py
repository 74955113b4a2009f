"""Hostile predictors, real servers on loopback behind a real gateway: answers over the size
limit (declared, chunked, compressed), error text that is huge or forges log lines, a
Content-Type that is not a header value, and a flood of Server-Timing entries.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import orjson
import pytest
from aiohttp import web

from gateway.sanitize import TEXT_LIMIT
from tests.e2e.support import MODEL, gateway_to, grpc_infer, grpc_upstream, rest_upstream

LIMIT = 1 << 20
BODY = orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def _through(behaviour: Behaviour, *flags: str) -> tuple[int, dict[str, str], bytes]:
    """One v2 REST request through a gateway in front of a REST predictor doing `behaviour`."""
    async with (
        rest_upstream(behaviour) as (address, _),
        gateway_to(address, "v2", "--max_upstream_response_bytes", str(LIMIT), *flags) as gw,
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.base_url}/v2/models/{MODEL}/infer",
            data=BODY,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as answer,
    ):
        return answer.status, dict(answer.headers), await answer.read()


async def _chunked(request: web.Request, hit: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    piece = b" " * (64 << 10)
    for _ in range(4 * LIMIT // len(piece)):  # four times the limit, never all at once
        await response.write(piece)
    await response.write_eof()
    return response


async def _declared(request: web.Request, hit: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1 << 30  # a gigabyte announced; a little sent
    await response.prepare(request)
    await response.write(b"{")
    return response


async def _gzip_bomb(request: web.Request, hit: int) -> web.StreamResponse:
    # 64 MiB of JSON spaces in some 64 KiB: the gateway asked for identity.
    bomb = gzip.compress(b" " * (64 << 20), compresslevel=9)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return web.Response(body=bomb, headers=headers)


@pytest.mark.parametrize("behaviour", [_chunked, _declared, _gzip_bomb])
async def test_an_answer_over_the_limit_is_a_502_naming_it(behaviour: Behaviour) -> None:
    status, _, body = await _through(behaviour)
    assert status == 502
    error = orjson.loads(body)["error"]
    assert f"limit of {LIMIT} bytes" in error


async def test_a_grpc_answer_over_the_same_limit_is_a_502_naming_it() -> None:
    async def huge(data: bytes, context: object, hit: int) -> bytes:
        return b"\x0a\x01m" + b"\x2a" + b"\x80\x80\x80\x01" + b"\x00" * (2 << 20)  # 2 MiB field

    async with (
        grpc_upstream(huge) as (address, _),
        gateway_to(address, "grpc-v2", "--max_upstream_response_bytes", str(LIMIT)) as gw,
        aiohttp.ClientSession() as session,
        session.post(f"{gw.base_url}/v2/models/{MODEL}/infer", data=BODY) as answer,
    ):
        status, error = answer.status, orjson.loads(await answer.read())["error"]
    assert status == 502
    assert str(LIMIT) in error


async def test_upstream_error_text_is_cut_to_one_line(caplog: pytest.LogCaptureFixture) -> None:
    forged = "bad input\n2026-01-01 00:00:00 CRITICAL forged log line\u2028" + "x" * (512 << 10)

    async def failing(request: web.Request, hit: int) -> web.StreamResponse:
        return web.json_response({"error": forged}, status=400)

    with caplog.at_level(logging.DEBUG):
        status, _, body = await _through(failing)
    assert status == 400
    error = orjson.loads(body)["error"]
    assert error.startswith("bad input")
    assert len(error) <= TEXT_LIMIT + 16
    assert "\n" not in error
    assert "\u2028" not in error
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message, message[:200]
        assert len(message) < 4 * TEXT_LIMIT, len(message)


async def test_a_grpc_upstream_error_text_is_cut_to_one_line() -> None:
    async def failing(
        data: bytes, context: grpc.aio.ServicerContext[bytes, bytes], hit: int
    ) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad\r\ninput " + "y" * (6 << 10))
        raise AssertionError("unreachable")

    async with (
        grpc_upstream(failing) as (address, _),
        gateway_to(address, "grpc-v2") as gw,
        grpc.aio.insecure_channel(gw.grpc) as channel,
    ):
        from gateway import InferInput, InferRequest

        tensor = InferInput("x", [1], "FP32", data=[1.0])
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await grpc_infer(channel)(InferRequest(MODEL, [tensor]).to_grpc_bytes(), timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = failed.value.details() or ""
    assert details.startswith("bad")
    assert "\n" not in details
    assert len(details) <= TEXT_LIMIT + 16


async def test_an_upstream_content_type_that_is_no_header_value_is_a_502() -> None:
    # Written by hand: an HTTP server library would refuse to send it.
    body = b'{"model_name": "m", "outputs": []}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\x01\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        gateway_to(f"127.0.0.1:{port}", "v2") as gw,
        aiohttp.ClientSession() as session,
        # Pass-through: the upstream's Content-Type would go to the client as it is.
        session.post(f"{gw.base_url}/v2/models/{MODEL}/infer", data=BODY) as response,
    ):
        status, error = response.status, orjson.loads(await response.read())["error"]
    assert status == 502
    assert "Content-Type" in error


async def test_merged_server_timing_is_capped_and_keeps_ours() -> None:
    entry = "upstream;desc=" + "d" * 7000

    async def timing_flood(request: web.Request, hit: int) -> web.StreamResponse:
        answer = {"model_name": MODEL, "outputs": []}
        response = web.json_response(answer)
        for index in range(20):
            response.headers.add("Server-Timing", f"{entry}{index};dur=1")
        return response

    status, headers, _ = await _through(timing_flood, "--enable_latency_logging", "true")
    assert status == 200
    timing = headers.get("Server-Timing", "")
    assert len(timing) <= 8192, len(timing)
    assert "predictor" in timing  # ours, whatever the upstream sent
