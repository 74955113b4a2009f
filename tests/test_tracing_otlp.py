"""The gateway's OTLP encoding against the SDK's: the same bytes for any batch of spans, and
the exporters sending ours."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from gateway import tracing_export, tracing_otlp

TEXT = st.text(max_size=12)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=False)  # NaN is encoded alike, but never equal to itself
PLAIN = st.one_of(st.booleans(), TEXT, INT64, FLOATS)
VALUES = st.one_of(
    PLAIN,
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(TEXT, max_size=3).map(tuple),
    st.lists(INT64, max_size=3).map(tuple),
    st.lists(FLOATS, max_size=3).map(tuple),
)
ATTRIBUTES = st.dictionaries(TEXT, VALUES, max_size=5)
IDS = st.integers(1, 2**64 - 1)
TRACE_IDS = st.integers(1, 2**128 - 1)
TIMES = st.integers(0, 2**63 - 1)
KEYS = st.text("abcdefghij", min_size=1, max_size=5)
STATES = st.dictionaries(KEYS, KEYS, max_size=2).map(lambda d: TraceState(list(d.items())))
CONTEXTS = st.builds(
    SpanContext,
    trace_id=TRACE_IDS,
    span_id=IDS,
    is_remote=st.booleans(),
    trace_state=st.one_of(st.none(), STATES),
)
EVENTS = st.builds(Event, name=TEXT, attributes=ATTRIBUTES, timestamp=TIMES)
LINKS = st.builds(Link, context=CONTEXTS, attributes=st.one_of(st.none(), ATTRIBUTES))
STATUSES = st.builds(
    Status, status_code=st.sampled_from(StatusCode), description=st.one_of(st.none(), TEXT)
)
RESOURCES = st.sampled_from(
    [
        Resource({"service.name": "gateway"}),
        Resource({"service.name": "other", "n": 3}, schema_url="https://example.com/s"),
        Resource({}),
    ]
)
SCOPES = st.sampled_from(
    [
        None,
        InstrumentationScope("gateway"),
        InstrumentationScope("gateway", "1.0", "https://example.com/s", {"a": "b"}),
    ]
)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    attributes: Any = draw(ATTRIBUTES)
    if draw(st.booleans()):  # as a span that met its attribute limit holds them
        attributes = BoundedAttributes(max(len(attributes) - 1, 0), attributes, immutable=True)
    return ReadableSpan(
        name=draw(TEXT),
        context=draw(CONTEXTS),
        parent=draw(st.one_of(st.none(), CONTEXTS)),
        resource=draw(RESOURCES),
        attributes=attributes,
        events=draw(st.lists(EVENTS, max_size=2)),
        links=draw(st.lists(LINKS, max_size=2)),
        kind=draw(st.sampled_from(SpanKind)),
        instrumentation_scope=draw(SCOPES),
        status=draw(STATUSES),
        start_time=draw(TIMES),
        end_time=draw(TIMES),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(spans(), max_size=6))
def test_the_bytes_are_the_sdks(batch: list[ReadableSpan]) -> None:
    assert tracing_otlp.encode(batch) == encode_spans(batch).SerializePartialToString()


@settings(max_examples=50, deadline=None)
@given(st.lists(spans(), min_size=1, max_size=3))
def test_the_grpc_request_is_the_sdks(batch: list[ReadableSpan]) -> None:
    assert tracing_otlp.encode_request(batch) == encode_spans(batch)


def test_a_repeated_attribute_is_encoded_once_and_kept_apart_by_kind() -> None:
    """True, 1 and 1.0 are equal keys to a dict: each must keep its own encoding."""
    context = SpanContext(1, 2, is_remote=False)
    batch = [
        ReadableSpan("s", context, attributes={"a": value}, start_time=1, end_time=2)
        for value in (True, 1, 1.0, True)
    ]
    message = ExportTraceServiceRequest.FromString(tracing_otlp.encode(batch))
    values = [span.attributes[0].value for span in message.resource_spans[0].scope_spans[0].spans]
    assert [value.WhichOneof("value") for value in values] == [
        "bool_value",
        "int_value",
        "double_value",
        "bool_value",
    ]


def test_what_otlp_cannot_carry_goes_the_sdks_way(caplog: pytest.LogCaptureFixture) -> None:
    """An integer past 64 bits: the SDK logs it and leaves the attribute out; so do we."""
    context = SpanContext(1, 2, is_remote=False)
    span = ReadableSpan("s", context, attributes={"big": 2**70, "ok": 1}, start_time=1, end_time=2)
    with caplog.at_level(logging.ERROR):
        encoded = tracing_otlp.encode([span])
    assert encoded == encode_spans([span]).SerializePartialToString()
    message = ExportTraceServiceRequest.FromString(encoded)
    kept = message.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [attribute.key for attribute in kept] == ["ok"]
    assert "big" in caplog.text


def test_both_otlp_exporters_encode_with_ours() -> None:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter

    (grpc_processor,) = tracing_export.processors(
        ["otlp"], service_name="s", protocol="grpc", endpoint="http://127.0.0.1:1"
    )
    (http_processor,) = tracing_export.processors(
        ["otlp"],
        service_name="s",
        protocol="http/protobuf",
        endpoint="http://127.0.0.1:1/v1/traces",
    )
    try:
        span = ReadableSpan("s", SpanContext(1, 2, is_remote=False), start_time=1, end_time=2)
        exporter: Any = grpc_processor.span_exporter  # type: ignore[attr-defined]
        assert exporter._translate_data([span]) == encode_spans([span])
        assert http_exporter.encode_spans is tracing_otlp.Encoded
    finally:
        grpc_processor.shutdown()
        http_processor.shutdown()


def test_long_values_are_not_remembered() -> None:
    """Error messages and stack traces seldom repeat: keeping their bytes would only grow."""
    context = SpanContext(1, 2, is_remote=False)
    long = "x" * 1000
    span = ReadableSpan(
        "s",
        context,
        attributes={"exception.message": long, "short": "y"},
        status=Status(StatusCode.ERROR, long),
        start_time=1,
        end_time=2,
    )
    assert tracing_otlp.encode([span]) == encode_spans([span]).SerializePartialToString()
    remembered = [*tracing_otlp._memo, *tracing_otlp._statuses]
    assert not [key for key in remembered if long in key]
    assert (9, "short", str, "y") in tracing_otlp._memo
