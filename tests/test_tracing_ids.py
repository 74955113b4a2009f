"""A sampled request names its trace: ``traceresponse`` on the answer (REST header, gRPC
trailer), ``trace_id`` / ``span_id`` on its access and latency log lines (plain and JSON), and
an exemplar on the request and hop histograms in an OpenMetrics scrape; each joined to the
spans a real exporter sent to a collector, with one gateway process and with ``--workers 2``.
A request not sampled, or served with tracing off, names none."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from gateway._proto import SERVICE_NAME, pb
from gateway.infer_request import InferRequest
from tests import test_tracing
from tests.models import EchoModel
from tests.otlp_grpc import Collector, Exported, grpc_collector
from tests.server.procs import ServerProcess, run_server
from tests.test_tracing import (
    BODY,
    GRPC_INFER,
    V2_INFER,
    by_name,
    dataplane_of,
    ended,
    serve_grpc,
    serve_rest,
    traceparent,
)
from tests.test_tracing_export import echo_predictor

# The in-memory exporter and a tracer exporting to it, shared with tests/test_tracing.py.
exporter = test_tracing.exporter
tracer = test_tracing.tracer

TRACE = "463ac35c9f6413ad48485a3953bb6124"
PARENT = "a2fb4a1d1a96d312"
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}
# An OpenMetrics bucket sample with an exemplar: name{labels} value # {trace_id="...",...}.
EXEMPLAR = re.compile(r"^(\w+)_bucket\{[^}]*\} \S+ # \{([^}]*)\}", re.M)
IDS = re.compile(r"trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})$")


def exemplars(scrape: str) -> dict[str, set[str]]:
    """metric -> the trace ids of its buckets' exemplars."""
    found: dict[str, set[str]] = {}
    for metric, labels in EXEMPLAR.findall(scrape):
        values = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found.setdefault(metric, set()).add(values["trace_id"])
    return found


# In process, with an in-memory exporter


async def session_to_echo(stack: AsyncExitStack, tracer: Tracer | None) -> aiohttp.ClientSession:
    host = await serve_rest(stack, dataplane_of(EchoModel()), tracer)
    return await stack.enter_async_context(aiohttp.ClientSession(f"http://{host}"))


async def test_rest_traceresponse_and_exemplar_name_the_server_span(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    async with AsyncExitStack() as stack:
        session = await session_to_echo(stack, tracer)
        sampled = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
        async with session.post("/v2/models/echo/infer", json=BODY, headers=sampled) as response:
            assert response.status == 200
            answered = response.headers["traceresponse"]
        assert answered == traceparent(by_name(exporter)[V2_INFER])
        assert answered.startswith(f"00-{TRACE}-")

        exporter.clear()
        unsampled = {"traceparent": f"00-{TRACE[::-1]}-{PARENT}-00"}
        async with session.post("/v2/models/echo/infer", json=BODY, headers=unsampled) as response:
            assert response.status == 200
            assert "traceresponse" not in response.headers
        assert exporter.get_finished_spans() == ()

        async with session.get("/metrics", headers=OPENMETRICS) as response:
            assert response.content_type == "application/openmetrics-text"
            scrape = await response.text()
        assert exemplars(scrape)["gateway_request_seconds"] == {TRACE}, scrape
        async with session.get("/metrics") as response:
            assert response.content_type == "text/plain"
            assert " # {" not in await response.text(), "no exemplars in Prometheus' text format"


async def test_grpc_trailers_carry_traceresponse_answered_or_failed(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    class Failing(EchoModel):
        async def predict(
            self, payload: Any, headers: Any = None, response_headers: Any = None
        ) -> Any:
            raise RuntimeError("model crashed")

    async with AsyncExitStack() as stack:
        host = await serve_grpc(stack, dataplane_of(EchoModel(), Failing("bad")), tracer)
        channel = grpc.aio.insecure_channel(host)
        stack.push_async_callback(channel.close, None)
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer", None, None)
        message = pb.ModelInferRequest(model_name="echo")
        message.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
        call = infer(message.SerializeToString())
        await call
        trailers = dict(await call.trailing_metadata() or ())
        assert trailers["traceresponse"] == traceparent(by_name(exporter)[GRPC_INFER])

        exporter.clear()
        message.model_name = "bad"
        failing = infer(message.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError):
            await failing
        trailers = dict(await failing.trailing_metadata() or ())
        assert trailers["traceresponse"] == traceparent(await ended(exporter, GRPC_INFER))


async def test_tracing_off_names_no_trace() -> None:
    async with AsyncExitStack() as stack:
        session = await session_to_echo(stack, None)
        sampled = {"traceparent": f"00-{TRACE}-{PARENT}-01"}
        async with session.post("/v2/models/echo/infer", json=BODY, headers=sampled) as response:
            assert response.status == 200
            assert "traceresponse" not in response.headers
        async with session.get("/metrics", headers=OPENMETRICS) as response:
            assert exemplars(await response.text()) == {}


# Real gateway processes exporting OTLP over gRPC to a collector in this test


@asynccontextmanager
async def traced_gateway(
    monkeypatch: pytest.MonkeyPatch, *flags: str
) -> AsyncIterator[tuple[ServerProcess, Collector]]:
    """`gateway serve` (identity transformer) in front of a REST predictor in this process,
    exporting to a collector here, B3 and W3C propagation."""
    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", echo_predictor)
    async with (
        grpc_collector() as (collector, port),
        TestServer(app, host="127.0.0.1", port=0) as predictor,
    ):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_PROPAGATORS", "b3,tracecontext")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gw")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        args = ["--model_name", "m", "--predictor_host", f"127.0.0.1:{predictor.port}"]
        args += ["--predictor_protocol", "v2", "--http_port", "0", "--grpc_port", "0", *flags]
        with run_server("gateway", "serve", *args) as server:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    async with session.get(f"{server.base_url}/v2/health/ready") as ready:
                        if ready.status == 200:
                            break
                    await asyncio.sleep(0.05)
            yield server, collector


async def logged(
    server: ServerProcess, done: Callable[[list[str]], bool], timeout: float = 10.0
) -> list[str]:
    """The server's output lines, once `done` says they are all there (within `timeout`)."""
    deadline = time.monotonic() + timeout
    while not done(lines := server.output().splitlines()):
        assert time.monotonic() < deadline, "\n".join(lines[-20:])
        await asyncio.sleep(0.02)
    return lines


async def post(server: ServerProcess, headers: dict[str, str]) -> str | None:
    """A fresh connection per request (with workers, each may land on another); the answer's
    traceresponse."""
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/m/infer"
        async with session.post(url, json=BODY, headers=headers) as response:
            assert response.status == 200, await response.text()
            return response.headers.get("traceresponse")


def server_span(spans: list[Exported], traceresponse: str) -> Exported:
    _, trace_id, span_id, flags = traceresponse.split("-")
    assert int(flags, 16) & 1, "sampled"  # 0x02: a trace id the SDK drew at random
    (span,) = [s for s in spans if (s.trace_id, s.span_id) == (trace_id, span_id)]
    assert span.name == V2_INFER
    return span


async def test_one_process_names_the_exported_trace_in_answer_logs_and_exemplars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with traced_gateway(monkeypatch) as (server, collector):
        b3 = await post(server, {"b3": f"{TRACE}-{PARENT}-1", "x-request-id": "b3-in"})
        fresh = await post(server, {"x-request-id": "fresh"})
        unsampled = await post(server, {"b3": f"{TRACE[::-1]}-{PARENT}-0", "x-request-id": "off"})
        assert None not in (b3, fresh)
        assert unsampled is None
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
        message = InferRequest.from_bytes(json.dumps(BODY).encode(), None, "m").to_grpc_bytes()
        call = infer(message, metadata=(("x-request-id", "grpc"),), timeout=10)
        await call
        grpc_trailer = dict(await call.trailing_metadata() or ())["traceresponse"]
        await channel.close()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.base_url}/metrics", headers=OPENMETRICS) as response,
        ):
            scrape = await response.text()
        _, grpc_trace, grpc_span, _ = grpc_trailer.split("-")
        wanted = {b3.split("-")[2], fresh.split("-")[2], grpc_span}
        spans = await collector.wait_for(lambda spans: wanted <= {s.span_id for s in spans})
        # Log lines are written in batches, in order: wait for the last request's access line.
        lines = await logged(server, lambda lines: any("GET /metrics" in x for x in lines))

    entered = server_span(spans, b3)
    assert (entered.trace_id, entered.parent_id) == (TRACE, PARENT), "the B3 trace went on"
    assert server_span(spans, fresh).parent_id == ""
    (grpc_server,) = [s for s in spans if s.span_id == grpc_span]
    assert (grpc_server.name, grpc_server.trace_id) == (GRPC_INFER, grpc_trace)

    for traceresponse, request_id in ((b3, "b3-in"), (fresh, "fresh")):
        _, trace_id, span_id, _ = traceresponse.split("-")
        named = [line for line in lines if line.endswith(f"trace_id={trace_id} span_id={span_id}")]
        access = [line for line in named if "aiohttp.access" in line]
        latency = [line for line in named if f"requestId: {request_id}," in line]
        assert len(access) == len(latency) == 1, named
    latency = [line for line in lines if "requestId: " in line]
    assert len(latency) == 4  # three REST requests and the gRPC one
    (off,) = [line for line in latency if "requestId: off," in line]
    assert "trace_id=" not in off, "not sampled: no ids"
    (grpc_line,) = [line for line in latency if "requestId: grpc," in line]
    assert grpc_line.endswith(f"trace_id={grpc_trace} span_id={grpc_span}")

    found = exemplars(scrape)
    exported = {span.trace_id for span in spans}
    for metric in ("gateway_request_seconds", "gateway_hop_seconds"):
        assert found[metric], scrape
        assert found[metric] <= exported
    assert TRACE[::-1] not in found["gateway_request_seconds"] | found["gateway_hop_seconds"]


@pytest.mark.timeout(90)
async def test_workers_share_exemplars_and_log_json_lines_with_the_exported_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with traced_gateway(monkeypatch, "--workers", "2", "--log_format", "json") as (
        server,
        collector,
    ):
        answers = [await post(server, {"x-request-id": f"r{i}"}) for i in range(12)]
        assert None not in answers
        wanted = {str(answer).split("-")[2] for answer in answers}
        spans = await collector.wait_for(lambda spans: wanted <= {s.span_id for s in spans})
        await asyncio.sleep(1.5)  # each worker shares its exemplars at most a second late
        scrapes = []
        for _ in range(4):  # whichever worker answers, it shows both workers' exemplars
            async with aiohttp.ClientSession() as session:
                url = f"{server.base_url}/metrics"
                async with session.get(url, headers=OPENMETRICS) as response:
                    assert response.content_type == "application/openmetrics-text"
                    scrapes.append(await response.text())

    answered = {str(answer).split("-")[1] for answer in answers}
    for scrape in scrapes:
        found = exemplars(scrape)
        for metric in ("gateway_request_seconds", "gateway_hop_seconds"):
            assert found[metric], scrape
            assert found[metric] <= answered

    entries = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    traced = [(e["trace_id"], e["span_id"]) for e in entries if "trace_id" in e]
    access = [e for e in entries if e["logger"] == "aiohttp.access" and "trace_id" in e]
    assert len(access) == len(answers)
    assert {(s.trace_id, s.span_id) for s in spans if s.name == V2_INFER} == set(traced)
    assert all("trace_id=" not in e["message"] for e in entries)
