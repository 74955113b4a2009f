"""Tracing end to end: settings from OTEL_* variables, propagation, SERVER and stage spans,
context reaching loopback upstreams, and one trace through three chained gateways.

Every provider is made here and handed to the servers and hops; the global one is never set.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import baggage, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from gateway import request_context, tracing
from gateway._proto import SERVICE_NAME, pb
from gateway.dataplane import DataPlane
from gateway.hops.factory import build_hop
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.infer_request import InferRequest
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.model_server import ModelServer, parser
from gateway.request_context import RequestContext
from gateway.server.grpc import start_grpc_server
from gateway.server.rest import create_app
from gateway.settings import ServerSettings
from gateway.tracing import RecentSpans, TracingSettings
from tests.hops.upstreams import serve_model_infer
from tests.models import EchoModel

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INBOUND = f"00-{TRACE_ID}-b7ad6b7169203331-01"
BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
SETTINGS = ServerSettings(listen_address="127.0.0.1")
V2_INFER = "POST /v2/models/{name}/infer"
GRPC_INFER = f"{SERVICE_NAME}/ModelInfer"
# One Server-Timing entry: a token name, then optional dur and desc parameters.
TIMING_ENTRY = re.compile(r'[!#$%&\'*+\-.^_`|~0-9A-Za-z]+(;dur=\d+(\.\d+)?)?(;desc="[^"]*")?')


class Failing(EchoModel):
    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        raise RuntimeError("model crashed")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_for(exporter: InMemorySpanExporter, service: str = "gw") -> TracerProvider:
    provider = tracing.tracer_provider(
        TracingSettings(service_name=service), [SimpleSpanProcessor(exporter)]
    )
    assert provider is not None
    return provider


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Tracer:
    return provider_for(exporter).get_tracer("test")


def dataplane_of(*models: Model) -> DataPlane:
    repository = ModelRepository()
    for model in models:
        repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    return dataplane


async def serve_rest(stack: AsyncExitStack, dataplane: DataPlane, tracer: Tracer | None) -> str:
    server = TestServer(create_app(dataplane, SETTINGS, Metrics(), tracer=tracer), port=0)
    await server.start_server()
    stack.push_async_callback(server.close)
    return f"127.0.0.1:{server.port}"


async def serve_grpc(stack: AsyncExitStack, dataplane: DataPlane, tracer: Tracer | None) -> str:
    server, port = await start_grpc_server(dataplane, SETTINGS, Metrics(), 0, tracer=tracer)
    stack.push_async_callback(server.stop, None)
    return f"127.0.0.1:{port}"


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


async def ended(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The span `name`, once it has ended: gRPC's abort sends the status to the client
    before the server's span around the call can end."""
    for _ in range(200):
        span = by_name(exporter).get(name)
        if span is not None:
            return span
        await asyncio.sleep(0.005)
    raise AssertionError(f"no span {name!r} ended")


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def timing_names(header: str) -> list[str]:
    entries = header.split(", ")
    assert all(TIMING_ENTRY.fullmatch(entry) for entry in entries), header
    return [entry.split(";")[0] for entry in entries]


# Settings and the provider


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, TracingSettings()),
        # The exporter resolves the endpoint itself (tests/test_tracing_export.py).
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "tx"},
            TracingSettings(("otlp",), "tx"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"},
            TracingSettings(("otlp",)),
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            TracingSettings(("otlp",), protocol="grpc"),
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " GRPC",
            },
            TracingSettings(("otlp",), protocol="grpc"),
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            TracingSettings(("otlp",), protocol="http/protobuf"),
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, TracingSettings(("console",))),
        ({"OTEL_TRACES_EXPORTER": "otlp, console, zipkin"}, TracingSettings(("otlp", "console"))),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_settings_from_env(environ: dict[str, str], expected: TracingSettings | None) -> None:
    settings = TracingSettings.from_env(environ)
    if expected is None:
        assert not settings.enabled
    else:
        assert settings == expected


def test_off_by_default_and_the_global_provider_is_left_alone() -> None:
    before = trace.get_tracer_provider()
    assert tracing.configure_tracing(environ={}) is None
    in_memory = SimpleSpanProcessor(InMemorySpanExporter())
    assert tracing.configure_tracing(extra_processors=[in_memory], environ={}) is not None
    console = tracing.tracer_provider(TracingSettings(("console",), "tx"))
    assert console is not None
    assert console.resource.attributes["service.name"] == "tx"
    console.shutdown()
    assert trace.get_tracer_provider() is before


def collector() -> tuple[web.Application, list[tuple[str, bytes]]]:
    """An OTLP/HTTP collector that keeps what it is sent."""
    received: list[tuple[str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.content_type, await request.read()))
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    return app, received


def exported_names(received: list[tuple[str, bytes]]) -> list[str]:
    return [
        span.name
        for _, body in received
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


async def test_otlp_http_export_reaches_a_collector() -> None:
    app, received = collector()
    async with TestServer(app, port=0) as server:
        endpoint = str(server.make_url("/v1/traces"))
        provider = tracing.tracer_provider(TracingSettings(("otlp",), "tx", endpoint))
        assert provider is not None
        provider.get_tracer("test").start_span("exported").end()
        # The exporter posts from its own thread; the loop must keep serving meanwhile.
        assert await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)
    ((content_type, body),) = received
    assert content_type == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = export.resource_spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "tx"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["exported"]


def test_extract_and_inject_carry_trace_context_and_baggage() -> None:
    inbound = {"traceparent": INBOUND, "tracestate": "v=1", "baggage": "tenant=acme"}
    context = tracing.extract(inbound)
    assert trace.get_current_span(context).get_span_context().trace_id == int(TRACE_ID, 16)
    assert baggage.get_baggage("tenant", context) == "acme"
    outbound: dict[str, str] = {}
    tracing.inject(outbound, context)
    assert outbound == inbound
    assert not trace.get_current_span(tracing.extract({})).get_span_context().is_valid


def test_recent_spans_keeps_the_last_spans_by_trace() -> None:
    recent = RecentSpans(capacity=4)
    provider = TracerProvider()
    provider.add_span_processor(recent)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("first") as first:
        tracer.start_span("a").end()
    with tracer.start_as_current_span("second") as second:
        tracer.start_span("b").end()
        tracer.start_span("c").end()
    first_id, second_id = first.get_span_context().trace_id, second.get_span_context().trace_id
    traces = recent.traces()
    assert list(traces) == [first_id, second_id]
    assert [s.name for s in traces[first_id]] == ["first"]  # "a" was the oldest: evicted
    assert [s.name for s in recent.trace(second_id)] == ["b", "c", "second"]
    with pytest.raises(ValueError, match="capacity"):
        RecentSpans(0)


# Servers


def test_stages_are_internal_spans_when_the_request_has_a_tracer(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    context = RequestContext(request_id="r", protocol="v2", tracer=tracer)
    with request_context.serving(context):
        with request_context.stage("preprocess"):
            pass
        with pytest.raises(RuntimeError), request_context.stage("predict"):
            raise RuntimeError("boom")
        assert [stage for stage, _ in context.timings] == ["preprocess", "predict"]
    preprocess, predict = exporter.get_finished_spans()
    assert (preprocess.name, preprocess.kind) == ("preprocess", SpanKind.INTERNAL)
    assert predict.status.status_code is StatusCode.ERROR
    assert [event.name for event in predict.events] == ["exception"]
    with request_context.serving(RequestContext("r", "v2")), request_context.stage("preprocess"):
        pass
    assert len(exporter.get_finished_spans()) == 2, "no tracer, no span"


async def test_rest_server_span_continues_the_inbound_trace(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    async with AsyncExitStack() as stack:
        host = await serve_rest(stack, dataplane_of(EchoModel(), Failing("bad")), tracer)
        session = await stack.enter_async_context(aiohttp.ClientSession(f"http://{host}"))
        headers = {"traceparent": INBOUND, "x-request-id": "r1"}
        async with session.post("/v2/models/echo/infer", json=BODY, headers=headers) as response:
            assert response.status == 200
            # EchoModel only overrides predict: stages left at their defaults are not run.
            assert timing_names(response.headers["Server-Timing"]) == ["predict"]
        spans = by_name(exporter)
        server = spans[V2_INFER]
        assert server.kind is SpanKind.SERVER
        assert server.context is not None
        assert server.context.trace_id == int(TRACE_ID, 16)
        assert parent_id(server) == 0xB7AD6B7169203331
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["http.route"] == "/v2/models/{name}/infer"
        assert server.attributes["gateway.model_name"] == "echo"
        assert server.attributes["gateway.request_id"] == "r1"
        assert server.attributes["client.address"] == "127.0.0.1"
        assert spans["predict"].kind is SpanKind.INTERNAL
        assert parent_id(spans["predict"]) == span_id(server)
        assert "preprocess" not in spans, "a default stage is skipped, so it has no span"

        exporter.clear()
        for path in ("/v2/health/ready", "/v2/models/echo/ready", "/metrics", "/"):
            async with session.get(path) as response:
                assert response.status == 200
        assert exporter.get_finished_spans() == (), "probes and metrics are not traced"

        async with session.post("/v2/models/bad/infer", json=BODY) as response:
            assert response.status == 500
        async with session.post("/v1/models/missing:predict", json={"instances": []}) as response:
            assert response.status == 404
        spans = by_name(exporter)
        failed, missing = spans[V2_INFER], spans["POST /v1/models/{name}:predict"]
        assert failed.status.status_code is StatusCode.ERROR
        assert parent_id(failed) is None, "no traceparent: a new trace"
        assert spans["predict"].events[0].name == "exception"
        assert missing.status.status_code is StatusCode.UNSET, "a 4xx is not a server error"


async def test_grpc_server_span_and_server_timing_trailer(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    async with AsyncExitStack() as stack:
        host = await serve_grpc(stack, dataplane_of(EchoModel(), Failing("bad")), tracer)
        channel = grpc.aio.insecure_channel(host)
        stack.push_async_callback(channel.close, None)
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer", None, None)
        message = pb.ModelInferRequest(model_name="echo")
        tensor = message.inputs.add(name="x", datatype="FP32", shape=[1])
        tensor.contents.fp32_contents.append(1.0)
        call = infer(message.SerializeToString(), metadata=(("traceparent", INBOUND),))
        await call
        trailers = dict(await call.trailing_metadata() or ())
        assert timing_names(trailers["server-timing"]) == ["predict"]
        spans = by_name(exporter)
        server = spans[GRPC_INFER]
        assert server.kind is SpanKind.SERVER
        assert parent_id(server) == 0xB7AD6B7169203331
        assert server.attributes is not None
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert server.attributes["rpc.method"] == "ModelInfer"
        assert server.attributes["client.address"] == "127.0.0.1"
        assert parent_id(spans["predict"]) == span_id(server)

        exporter.clear()
        live = channel.unary_unary(f"/{SERVICE_NAME}/ServerReady", None, None)
        await live(pb.ServerReadyRequest().SerializeToString())
        assert exporter.get_finished_spans() == (), "probes are not traced"
        message.model_name = "bad"
        failing = infer(message.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError):
            await failing
        trailers = dict(await failing.trailing_metadata() or ())
        assert timing_names(trailers["server-timing"]) == ["predict"]
        server = await ended(exporter, GRPC_INFER)
        assert server.attributes is not None
        assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
        assert server.status.status_code is StatusCode.ERROR


# Hops to real loopback upstreams


async def test_each_attempt_sends_its_own_traceparent_to_a_rest_upstream(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    seen: list[dict[str, str]] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append({key.lower(): value for key, value in request.headers.items()})
        if len(seen) == 1:
            return web.json_response({"error": "warming up"}, status=503)
        return web.json_response({"model_name": "m", "outputs": []})

    app = web.Application()
    app.router.add_post("/v2/models/m/infer", upstream)
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(TestServer(app, port=0))
        retry = RetryPolicy(retries=1, backoff_initial=0)
        settings = HopSettings("predictor", f"127.0.0.1:{server.port}", "m", "v2", retry=retry)
        hop = build_hop(settings, metrics=Metrics(), tracer=tracer)
        stack.push_async_callback(hop.aclose)
        request = InferRequest.from_bytes(orjson.dumps(BODY), None, "m")
        with tracer.start_as_current_span("predict"):
            await hop.infer(request, {"x-request-id": "r1"})
    attempts = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [h["traceparent"] for h in seen] == [traceparent(s) for s in attempts]
    assert [h["x-request-id"] for h in seen] == ["r1", "r1"]


async def test_traceparent_reaches_a_grpc_upstream_as_metadata(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    seen: list[dict[str, str | bytes]] = []

    async def upstream(data: bytes, context: Any) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        response: bytes = pb.ModelInferResponse(model_name="m").SerializeToString()
        return response

    async with serve_model_infer(upstream) as address:
        settings = HopSettings("predictor", address, "m", "grpc-v2")
        async with build_hop(settings, metrics=Metrics(), tracer=tracer) as hop:
            await hop.infer(InferRequest.from_bytes(orjson.dumps(BODY), None, "m"), {})
    (attempt,) = exporter.get_finished_spans()
    assert seen[0]["traceparent"] == traceparent(attempt)


# Three gateways: A (REST) -> B (REST) -> C (gRPC, the model)


async def chain(stack: AsyncExitStack, tracers: list[Tracer | None]) -> str:
    """Start C, B and A on loopback, each a transformer forwarding to the next; A's host."""
    tracer_a, tracer_b, tracer_c = tracers
    host_c = await serve_grpc(stack, dataplane_of(EchoModel("m")), tracer_c)
    host = host_c
    for tracer, protocol in ((tracer_b, "grpc-v2"), (tracer_a, "v2")):
        settings = HopSettings("predictor", host, "m", protocol)
        transformer = Model("m")
        transformer.ready = True
        transformer.predictor_hop = build_hop(settings, metrics=Metrics(), tracer=tracer)
        stack.push_async_callback(transformer.predictor_hop.aclose)
        host = await serve_rest(stack, dataplane_of(transformer), tracer)
    return host


async def test_three_gateways_make_one_trace(exporter: InMemorySpanExporter) -> None:
    tracers: list[Tracer | None] = [
        provider_for(exporter, service).get_tracer("gateway") for service in "ABC"
    ]
    async with AsyncExitStack() as stack:
        host = await chain(stack, tracers)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{host}/v2/models/m/infer", json=BODY) as response,
        ):
            assert response.status == 200
            assert (await response.json())["outputs"][0]["data"] == [1.0, 2.0]
            timing = response.headers["Server-Timing"]

    spans = exporter.get_finished_spans()
    assert len({span.context.trace_id for span in spans if span.context}) == 1, "one trace"
    # A and B forward (their default predict has no span of its own): server, hop; C, whose
    # predict is the model's own code: server, predict.
    assert len(spans) == 2 + 2 + 2
    index = {span_id(span): span for span in spans}

    def path_to_root(span: ReadableSpan) -> list[str]:
        names = []
        current: ReadableSpan | None = span
        while current is not None:
            names.append(f"{service(current)}:{current.name}")
            parent = parent_id(current)
            current = None if parent is None else index[parent]
        return names

    (c_predict,) = [s for s in spans if s.name == "predict" and service(s) == "C"]
    assert path_to_root(c_predict) == [
        "C:predict",
        f"C:{GRPC_INFER}",
        "B:hop predictor",
        f"B:{V2_INFER}",
        "A:hop predictor",
        f"A:{V2_INFER}",
    ]
    kinds = {f"{service(s)}:{s.name}": s.kind for s in spans}
    assert kinds[f"A:{V2_INFER}"] is kinds[f"C:{GRPC_INFER}"] is SpanKind.SERVER
    assert kinds["A:hop predictor"] is kinds["B:hop predictor"] is SpanKind.CLIENT

    names = timing_names(timing)
    # Identity transformers: only predict runs (default stages are skipped), and the hop.
    stages = ["hop.predictor", "predict"]
    assert names == [
        *stages,  # A's own
        *(f"predictor.{name}" for name in stages),  # B's, as A's hop reported them
        "predictor.predictor.predict",  # C's
    ]
    # Each process's stage holds the next one's: the merged durations nest down the chain.
    nested = [
        "predict",  # A's stage, around
        "hop.predictor",  # A's call to B, around
        "predictor.predict",  # B's stage, around
        "predictor.hop.predictor",  # B's call to C, around
        "predictor.predictor.predict",  # C's stage
    ]
    dur = {entry.split(";")[0]: float(entry.split(";dur=")[1]) for entry in timing.split(", ")}
    durations = [dur[name] for name in nested]
    assert durations == sorted(durations, reverse=True), timing


async def test_three_gateways_with_tracing_off(exporter: InMemorySpanExporter) -> None:
    """No tracer anywhere: requests work, Server-Timing is still merged, nothing is traced."""
    async with AsyncExitStack() as stack:
        host = await chain(stack, [None, None, None])
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{host}/v2/models/m/infer", json=BODY) as response,
        ):
            assert response.status == 200
            names = timing_names(response.headers["Server-Timing"])
    assert "predictor.predictor.predict" in names
    assert "hop.predictor" in names
    assert exporter.get_finished_spans() == ()


async def test_model_server_traces_when_the_environment_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, received = collector()
    async with TestServer(app, port=0) as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", str(server.make_url("/")))
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")  # milliseconds
        model_server = ModelServer(
            http_port=0,
            grpc_port=0,
            listen_address="127.0.0.1",
            args=parser.parse_args([]),
            configure_logging=False,
        )
        model_server.register_model(EchoModel("m"))
        await model_server.startup()
        try:
            base = f"http://127.0.0.1:{model_server.bound_http_port}"
            async with aiohttp.ClientSession(base) as session:
                for _ in range(500):  # the models load in the background
                    if await model_server.dataplane.ready():
                        break
                    await asyncio.sleep(0.01)
                async with session.post("/v2/models/m/infer", json=BODY) as response:
                    assert response.status == 200
            for _ in range(500):
                if V2_INFER in exported_names(received):
                    break
                await asyncio.sleep(0.01)
        finally:
            await model_server.shutdown()
    assert {V2_INFER, "predict"} <= set(exported_names(received))


def test_the_sampler_comes_from_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """What bench/README.md advises for production: sample a share of the traces."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    spans = tracing.recent_spans(10)
    assert spans is not None
    provider = tracing.tracer_provider(tracing.TracingSettings(service_name="s"), [spans])
    assert provider is not None
    try:
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
    finally:
        provider.shutdown()
