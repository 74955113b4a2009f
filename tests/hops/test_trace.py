"""`Traced`: a CLIENT span per attempt, context in the outbound headers, metrics and timings.

Spans go to an in-memory exporter of a provider made here; the global provider is never set.
Loopback upstreams (REST and gRPC) that check `traceparent` arrived are in tests/test_tracing.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer, format_span_id, format_trace_id

from gateway import tracing
from gateway.errors import UpstreamStatusError, UpstreamUnavailable
from gateway.hops.base import Headers
from gateway.hops.mock import MockHop, echo
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.hops.trace import Traced
from gateway.metrics import Metrics
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.request_context import RequestContext, serving
from gateway.server.server_timing import server_timing

REST = HopSettings(role="predictor", host="10.0.0.7:8085", model_name="m", protocol="v2")
GRPC = HopSettings(role="predictor", host="upstream.svc:9000", model_name="m", protocol="grpc-v2")
V1 = {"instances": [[1, 2]]}
INBOUND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-" + (
        f"{context.trace_flags:02x}"
    )


def client_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]


def hop_samples(metrics: Metrics) -> dict[str, float]:
    """outcome -> observations of gateway_hop_seconds."""
    counts: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "gateway_hop_seconds_count":
                counts[sample.labels["outcome"]] = sample.value
    return counts


def flaky(failures: int, error: Exception, protocol: str = "v2") -> MockHop:
    """Fails `failures` times with `error`, then echoes."""
    remaining = [failures]

    def handler(payload: Any, headers: Headers) -> Any:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise error
        return echo(payload)

    return MockHop(handler, protocol=protocol)


async def no_sleep(seconds: float) -> None:
    pass


async def test_each_attempt_is_a_client_span_of_its_own(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    mock = flaky(2, UpstreamStatusError("busy", status=503))
    metrics = Metrics()
    hop = Retrying(
        Traced(mock, settings=REST, metrics=metrics, tracer=tracer),
        RetryPolicy(retries=3),
        sleep=no_sleep,
        random=lambda: 0.0,
    )
    headers = {"x-request-id": "r1"}
    with tracer.start_as_current_span("predict") as parent:
        assert await hop.infer(V1, headers) == {"predictions": [[1, 2]]}

    spans = client_spans(exporter)
    assert [span.name for span in spans] == ["hop predictor"] * 3
    assert [span.attributes["gateway.hop.attempt"] for span in spans] == [1, 2, 3]  # type: ignore[index]
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context is not None
        assert span.context.trace_id == parent.get_span_context().trace_id
    # Each attempt carried its own span as the parent for the upstream.
    assert [call.headers["traceparent"] for call in mock.calls] == [traceparent(s) for s in spans]
    assert all(call.headers["x-request-id"] == "r1" for call in mock.calls)
    assert headers == {"x-request-id": "r1"}, "the caller's headers are not changed"

    failed, _, succeeded = spans
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["http.response.status_code"] == 503  # type: ignore[index]
    assert failed.attributes["gateway.hop.status"] == "503"  # type: ignore[index]
    assert failed.attributes["error.type"] == "UpstreamStatusError"  # type: ignore[index]
    assert [event.name for event in failed.events] == ["exception"]
    assert succeeded.status.status_code is StatusCode.UNSET
    assert succeeded.attributes["http.response.status_code"] == 200  # type: ignore[index]
    assert succeeded.attributes["http.request.resend_count"] == 2  # type: ignore[index]
    assert hop_samples(metrics) == {"UpstreamStatusError": 2, "ok": 1}


async def test_rest_attributes(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    await Traced(MockHop(protocol="v2"), settings=REST, tracer=tracer).infer(V1, {})
    (span,) = client_spans(exporter)
    assert dict(span.attributes or {}) == {
        "gateway.hop": "predictor",
        "gateway.hop.protocol": "v2",
        "gateway.hop.verb": "infer",
        "gateway.hop.attempt": 1,
        "gateway.hop.status": "200",
        "gateway.model_name": "m",
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "server.address": "10.0.0.7",
        "server.port": 8085,
    }
    assert span.parent is None, "outside any span, an attempt starts a trace"


async def test_grpc_attributes_and_status_code_names(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    error = UpstreamStatusError("gone", status=503, code=grpc.StatusCode.UNAVAILABLE)
    hop = Traced(flaky(1, error, protocol="grpc-v2"), settings=GRPC, tracer=tracer)
    with pytest.raises(UpstreamStatusError):
        await hop.infer(V1, {})
    await hop.infer(V1, {})
    failed, succeeded = client_spans(exporter)
    assert failed.attributes is not None
    assert succeeded.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == 14
    assert failed.attributes["gateway.hop.status"] == "UNAVAILABLE"
    assert failed.status.description == "UpstreamStatusError: gone"
    assert succeeded.attributes["rpc.grpc.status_code"] == 0
    assert succeeded.attributes["gateway.hop.status"] == "OK"
    assert succeeded.attributes["gateway.hop.protocol"] == "grpc-v2"
    assert succeeded.attributes["rpc.system"] == "grpc"
    assert succeeded.attributes["rpc.service"] == "inference.GRPCInferenceService"
    assert succeeded.attributes["rpc.method"] == "ModelInfer"
    assert succeeded.attributes["server.address"] == "upstream.svc"
    assert succeeded.attributes["server.port"] == 9000
    assert "http.response.status_code" not in succeeded.attributes


async def test_a_failure_without_a_status_is_an_error_with_its_class(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    hop = Traced(flaky(1, UpstreamUnavailable("refused")), settings=REST, tracer=tracer)
    with pytest.raises(UpstreamUnavailable):
        await hop.infer(V1, {})
    (span,) = client_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "UpstreamUnavailable"
    assert "gateway.hop.status" not in span.attributes
    (event,) = span.events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "gateway.errors.UpstreamUnavailable"


async def test_explain_is_traced_like_infer(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    mock = MockHop(name="explainer", protocol="v1")
    settings = HopSettings(role="explainer", host="127.0.0.1:9", model_name="m")
    await Traced(mock, settings=settings, tracer=tracer).explain(V1, {})
    (span,) = client_spans(exporter)
    assert span.name == "hop explainer"
    assert span.attributes is not None
    assert span.attributes["gateway.hop.verb"] == "explain"
    assert "traceparent" in mock.calls[0].headers


async def test_inbound_tracestate_and_baggage_travel_on(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    inbound = {
        "traceparent": INBOUND,
        "tracestate": "vendor=opaque",
        "baggage": "tenant=acme",
    }
    mock = MockHop()
    with tracer.start_as_current_span("server", context=tracing.extract(inbound)):
        await Traced(mock, settings=REST, tracer=tracer).infer(V1, dict(inbound))
    sent = mock.calls[0].headers
    (span,) = client_spans(exporter)
    assert sent["traceparent"] == traceparent(span)
    assert sent["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert sent["tracestate"] == "vendor=opaque"
    assert sent["baggage"] == "tenant=acme"


@pytest.mark.parametrize("traced", [True, False], ids=["tracing-on", "tracing-off"])
async def test_metrics_and_timings_per_attempt(
    tracer: Tracer, exporter: InMemorySpanExporter, traced: bool
) -> None:
    metrics = Metrics()
    mock = flaky(1, UpstreamStatusError("busy", status=503))
    hop = Retrying(
        Traced(mock, settings=REST, metrics=metrics, tracer=tracer if traced else None),
        RetryPolicy(retries=1),
        sleep=no_sleep,
    )
    context = RequestContext(request_id="r", protocol="v2")
    with serving(context):
        await hop.infer(V1, {})
    assert [stage for stage, _ in context.timings] == ["hop.predictor", "hop.predictor"]
    assert all(seconds >= 0 for _, seconds in context.timings)
    timing = server_timing(context)
    assert timing is not None
    assert [entry.split(";")[0] for entry in timing.split(", ")] == ["hop.predictor"] * 2
    assert hop_samples(metrics) == {"UpstreamStatusError": 1, "ok": 1}
    assert len(client_spans(exporter)) == (2 if traced else 0)


async def test_tracing_off_passes_headers_as_they_are(exporter: InMemorySpanExporter) -> None:
    mock = MockHop()
    headers = {"x-request-id": "r", "traceparent": INBOUND}
    hop = Traced(mock, settings=REST)
    assert await hop.infer(V1, headers) == {"predictions": [[1, 2]]}
    assert mock.calls[0].headers == headers
    assert await Traced(MockHop()).infer(V1, {}) == {"predictions": [[1, 2]]}, "no settings: ok"


async def test_ready_is_not_traced_or_timed(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    metrics = Metrics()
    hop = Traced(MockHop(ready=False), settings=REST, metrics=metrics, tracer=tracer)
    context = RequestContext(request_id="r", protocol="v2")
    with serving(context):
        assert await hop.ready("m") is False
    assert exporter.get_finished_spans() == ()
    assert context.timings == []
    assert hop_samples(metrics) == {}


async def test_a_cancelled_attempt_is_recorded(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    started = asyncio.Event()

    async def hang(payload: Any, headers: Headers) -> Any:
        started.set()
        await asyncio.Event().wait()

    metrics = Metrics()
    hop = Traced(MockHop(hang), settings=REST, metrics=metrics, tracer=tracer)
    task = asyncio.create_task(hop.infer(V1, {}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = client_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert hop_samples(metrics) == {"CancelledError": 1}


async def test_sizes_of_bytes_bodies(tracer: Tracer, exporter: InMemorySpanExporter) -> None:
    request = Passthrough(protocol="v2", model_name="m", body=b"x" * 10)
    mock = MockHop(lambda payload, headers: PassthroughResponse(body=b"y" * 4))
    await Traced(mock, settings=REST, tracer=tracer).infer(request, {})
    await Traced(MockHop(), settings=REST, tracer=tracer).infer(V1, {})
    sized, decoded = client_spans(exporter)
    assert sized.attributes is not None
    assert decoded.attributes is not None
    assert sized.attributes["http.request.body.size"] == 10
    assert sized.attributes["http.response.body.size"] == 4
    assert "http.request.body.size" not in decoded.attributes, "unknown for decoded messages"


async def test_wrapper_delegates_the_rest(tracer: Tracer) -> None:
    mock = MockHop(name="predictor", protocol="v1")
    hop = Traced(mock, settings=REST, tracer=tracer)
    assert (hop.name, hop.protocol) == ("predictor", "v1")
    assert hop.accepts_passthrough("v1", False) is False
    async with hop:
        pass
    assert mock.closed
