"""Access lines (server.access_log): REST's formats, the gRPC door's line per call, and the
server's own log records."""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_log import AccessLogger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import InferInput, InferRequest
from gateway._proto import SERVICE_NAME, pb
from gateway.metrics import Metrics
from gateway.server import access_log, grpc_metadata
from gateway.server.grpc import start_grpc_server
from tests.hops.upstreams import SETTINGS, dataplane
from tests.models import EchoModel


def test_kserves_format_becomes_aiohttps() -> None:
    assert access_log.aiohttp_format(None) == AccessLogger.LOG_FORMAT
    assert access_log.aiohttp_format("%a %s") == "%a %s"  # already aiohttp's
    gunicorn = '%(h)s "%(r)s" %(s)s %(b)s %(D)s %(m)s %({X-Request-Id}i)s %({Server-Timing}o)s'
    assert access_log.aiohttp_format(gunicorn) == (
        '%a "%r" %s %b %D - %{X-Request-Id}i %{Server-Timing}o'
    )


def test_our_fast_logger_for_the_default_line_only() -> None:
    assert access_log.access_logger_class(None) is access_log.FastAccessLogger
    assert access_log.access_logger_class("%a") is AccessLogger


def _parse_error_record(logger: logging.Logger, text: str) -> logging.LogRecord:
    """The record aiohttp makes for a request it cannot parse, quoting `text`."""
    try:
        raise BadHttpMessage(text)
    except BadHttpMessage:
        import sys

        return logger.makeRecord(
            logger.name, logging.ERROR, __file__, 0, "Error handling request from %s",
            ("10.0.0.1",), sys.exc_info(),
        )  # fmt: skip


def test_a_request_that_cannot_be_parsed_is_logged_without_its_bytes() -> None:
    logger = access_log.server_logger()
    assert access_log.server_logger() is logger
    assert len(logger.filters) == 1, "the filter is added once"
    secret = "Authorization: Bearer s3cr3t"
    record = _parse_error_record(logger, secret)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert logger.filters[0].filter(record)
    finally:
        logger.setLevel(level)
    assert record.getMessage() == "malformed HTTP request from 10.0.0.1: 400 BadHttpMessage"
    assert record.levelno == logging.DEBUG  # a client can send thousands: not an ERROR
    assert record.exc_info is None
    assert secret not in record.getMessage()


async def test_one_grpc_access_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    """Every method, answered or failed, traced or not: peer, time, method, model, code, bytes,
    seconds, request id (and the trace of a sampled call), as the REST line."""
    caplog.set_level(logging.INFO, logger=access_log.GRPC_ACCESS_LOGGER)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    plane = dataplane([EchoModel("m")])
    server, port = await start_grpc_server(
        plane, SETTINGS, Metrics(), 0, tracer=provider.get_tracer("t")
    )
    request = InferRequest("m", [_tensor()], request_id="r-9").to_grpc()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = _rpc(channel, "ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)
            answer = await infer(request, metadata=(("x-request-id", "abc"),))
            metadata = _rpc(channel, "ModelMetadata", pb.ModelMetadataRequest,
                            pb.ModelMetadataResponse)  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError):
                await metadata(pb.ModelMetadataRequest(name="nope\nforged"))
            ready = _rpc(channel, "ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse)
            assert (await ready(pb.ServerReadyRequest())).ready
    finally:
        await server.stop(None)
    lines = [r.getMessage() for r in caplog.records if r.name == access_log.GRPC_ACCESS_LOGGER]
    assert len(lines) == 3
    (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("ModelInfer")]
    trace = f"trace_id={span.context.trace_id:032x} span_id={span.context.span_id:016x}"
    stamp = r"127\.0\.0\.1 \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
    size = len(answer.SerializeToString())
    assert re.fullmatch(
        stamp + rf'"gRPC ModelInfer m" OK {size} \d+\.\d{{6}} request_id=abc {trace}', lines[0]
    ), lines[0]
    # A name from the message cannot forge a line.
    assert re.fullmatch(
        stamp + r"\"gRPC ModelMetadata 'nope\\nforged'\" NOT_FOUND 0 \d+\.\d{6} request_id=-",
        lines[1],
    ), lines[1]
    assert re.fullmatch(stamp + r'"gRPC ServerReady -" OK 2 \d+\.\d{6} request_id=-', lines[2])


def test_grpc_peers_are_read_as_addresses() -> None:
    assert grpc_metadata.peer_address("ipv4:127.0.0.1:5050") == "127.0.0.1"
    assert grpc_metadata.peer_address("ipv6:%5B::1%5D:5050") == "::1"
    assert grpc_metadata.peer_address("unix:/tmp/s") == "/tmp/s"


def _tensor() -> InferInput:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    return tensor


def _rpc(channel: grpc.aio.Channel, method: str, request: Any, response: Any) -> Any:
    return channel.unary_unary(
        f"/{SERVICE_NAME}/{method}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


def test_a_request_that_cannot_be_parsed_is_not_logged_above_debug() -> None:
    logger = access_log.server_logger()
    record = _parse_error_record(logger, "junk")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert not logger.filters[0].filter(record)
    finally:
        logger.setLevel(level)
