"""The envelope both doors put every inference request in: its context, the in-flight gauge,
the request metrics, admission and (given a tracer) its SERVER span."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import request_context
from gateway.errors import Overloaded
from gateway.metrics import Metrics
from gateway.server.envelope import Envelope, SpanStart, answer_headers, request_id
from tests.hops.upstreams import dataplane
from tests.models import EchoModel

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(max_concurrency: int | None = None, tracer: object = None) -> Envelope:
    plane = dataplane([EchoModel("echo")])
    plane.max_concurrency = max_concurrency
    return Envelope(plane, Metrics(), tracer)  # type: ignore[arg-type]


def sample(env: Envelope, name: str, labels: dict[str, str]) -> float | None:
    return env.metrics.registry.get_sample_value(name, labels)


def test_the_request_id_is_the_clients_or_a_new_one() -> None:
    assert request_id({"x-request-id": "mine"}) == "mine"
    made = {request_id({}) for _ in range(3)}
    assert len(made) == 3
    assert all(re.fullmatch("[0-9a-f]{32}", made_id) for made_id in made)
    context = envelope().context("v2", "r1", 12.5)
    assert (context.request_id, context.protocol, context.deadline) == ("r1", "v2", 12.5)


def test_an_inbound_request_is_counted_measured_and_labelled_when_registered() -> None:
    env = envelope()
    in_flight = env.metrics.in_flight
    for model, label in (("echo", "echo"), ("made-up", "")):
        with env.inbound(env.context("v2", "r", None), None, "499") as inbound:
            assert in_flight._value.get() == 1
            inbound.model = model
            inbound.status = "200"
        assert in_flight._value.get() == 0
        labels = {"model_name": label, "protocol": "v2", "code": "200"}
        assert sample(env, "gateway_requests_total", labels) == 1.0
    # A request whose door set no status (its client left) keeps the one it was opened with.
    with env.inbound(env.context("grpc-v2", "r", None), None, "CANCELLED") as inbound:
        inbound.model = "echo"
    labels = {"model_name": "echo", "protocol": "grpc-v2", "code": "CANCELLED"}
    assert sample(env, "gateway_requests_total", labels) == 1.0


def test_stage_timings_are_recorded_and_go_back_with_the_answer() -> None:
    env = envelope()
    context = env.context("v2", "r7", None)
    assert answer_headers(context) == (("x-request-id", "r7"),)
    with env.inbound(context, None, "200") as inbound:
        inbound.model = "echo"
        with inbound.admitted(), request_context.stage("predict"):
            pass
    [(name, value)] = answer_headers(context)[1:]
    assert name == "server-timing"
    assert re.fullmatch(r"predict;dur=\d+\.\d{3}", value)
    count = sample(env, "request_predict_seconds_count", {"model_name": "echo"})
    assert count == 1.0


async def test_admitted_makes_the_context_current_and_refuses_past_the_limit() -> None:
    env = envelope(max_concurrency=1)
    first = env.inbound(env.context("v2", "a", None), None, "200")
    second = env.inbound(env.context("v2", "b", None), None, "200")
    with first, second:
        assert request_context.current() is None
        with first.admitted():
            assert request_context.current() is first.context
            with pytest.raises(Overloaded), second.admitted():
                pass
        assert request_context.current() is None
        with second.admitted():  # the first left: room again
            assert request_context.current() is second.context
    assert env.dataplane.in_flight == 0


def test_a_traced_request_continues_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    env = envelope(tracer=provider.get_tracer("test"))
    start = SpanStart("POST /x", {"traceparent": TRACEPARENT}, {"gateway.model_name": "echo"})
    with env.inbound(env.context("v2", "r", None), start, "200") as inbound:
        assert inbound.span is not None
        inbound.span.set_attribute("http.response.status_code", 200)
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("POST /x", SpanKind.SERVER)
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert span.attributes == {"gateway.model_name": "echo", "http.response.status_code": 200}
    # Without a tracer there is no span, whatever the door describes.
    untraced = envelope()
    with untraced.inbound(untraced.context("v2", "r", None), start, "200") as inbound:
        assert inbound.span is None
