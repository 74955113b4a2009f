"""The gateway's lean spans (gateway.tracing_spans) export what the SDK's spans would: the same
script run on a `LeanTracer` and on the SDK tracer it is built from gives the same spans (ids and
times aside), attributes cleaned and bounded, events, links, status rules, parents, sampling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from gateway.tracing_spans import HashedResource, LeanSpan, LeanTracer

Script = Callable[[trace.Tracer], None]


def _run(script: Script, **provider: Any) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    """The spans `script` exports through the SDK's tracer, and through the lean one."""
    exported = []
    for lean in (False, True):
        exporter = InMemorySpanExporter()
        made = TracerProvider(**provider)
        made.add_span_processor(SimpleSpanProcessor(exporter))
        tracer: Any = made.get_tracer("gateway", "1.0")
        if lean:
            tracer = LeanTracer(tracer, InstrumentationScope("gateway", "1.0"))
        script(tracer)
        exported.append(list(exporter.get_finished_spans()))
    return exported[0], exported[1]


def _shape(span: ReadableSpan, ids: dict[int, int]) -> dict[str, Any]:
    """What an exporter reads of `span`, its ids numbered in order of appearance."""

    def number(span_id: int | None) -> int | None:
        return None if span_id is None else ids.setdefault(span_id, len(ids))

    return {
        "name": span.name,
        "kind": span.kind,
        "span": number(span.context.span_id if span.context else None),
        "parent": number(span.parent.span_id if span.parent else None),
        "sampled": span.context.trace_flags.sampled if span.context else None,
        "attributes": dict(span.attributes or {}),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "events": [
            (e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
            for e in span.events
        ],
        "links": [
            (number(link.context.span_id), dict(link.attributes or {})) for link in span.links
        ],
        "status": (span.status.status_code, span.status.description),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version)
        if span.instrumentation_scope
        else None,
        "resource": dict(span.resource.attributes),
        "timed": bool(span.start_time and span.end_time and span.start_time <= span.end_time),
    }


def _same(script: Script, **provider: Any) -> list[dict[str, Any]]:
    sdk, lean = _run(script, **provider)
    shapes = [[_shape(span, {}) for span in spans] for spans in (sdk, lean)]
    assert shapes[1] == shapes[0]
    assert all(isinstance(span, LeanSpan) for span in lean)
    return shapes[0]


def test_attributes_are_kept_cleaned_and_replaced_as_the_sdk_does() -> None:
    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span("s", kind=SpanKind.CLIENT, attributes={"at.start": 1})
        span.set_attributes({"str": "a", "int": 2, "float": 0.5, "bool": True, "none": None})
        span.set_attribute("list", [1, 2])
        span.set_attribute("mapping", {"k": "v"})
        span.set_attribute("bytes", b"x")
        span.set_attribute("object", object())  # no str of its own: the value becomes None
        span.set_attribute("str", "again")  # the newest value, last
        span.set_attribute("", "empty key")  # dropped
        span.end()
        span.set_attribute("after", "end")  # ignored

    (shape,) = _same(script)
    assert list(shape["attributes"])[-1] == "str"
    assert shape["attributes"]["list"] == (1, 2)


def test_the_attribute_limits_bound_as_the_sdk_does(monkeypatch: pytest.MonkeyPatch) -> None:
    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span("s")
        for i in range(5):
            span.set_attribute(f"k{i}", "x" * 10)
        span.end()

    limits = SpanLimits(max_span_attributes=3, max_span_attribute_length=4)
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    (shape,) = _same(script, span_limits=limits)
    assert shape["attributes"] == {"k2": "xxxx", "k3": "xxxx", "k4": "xxxx"}
    assert shape["dropped"][0] == 2


def test_events_exceptions_links_and_status_as_the_sdk_records_them() -> None:
    def script(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("outer") as outer:
            outer.add_event("retry", {"attempt": 1, "reason": "503"})
            outer.set_status(Status(StatusCode.ERROR, "first"))
            outer.set_status(StatusCode.UNSET)  # changes nothing
            outer.update_name("renamed")
            child = tracer.start_span(
                "child", links=[Link(outer.get_span_context(), {"why": "test"})]
            )
            child.add_link(outer.get_span_context())
            child.set_status(StatusCode.OK)
            child.set_status(Status(StatusCode.ERROR))  # OK is final
            child.end()
            try:
                with tracer.start_as_current_span("failing", kind=SpanKind.SERVER):
                    raise ValueError("bad input")
            except ValueError:
                pass
            with tracer.start_span("direct") as direct:
                direct.record_exception(KeyError("k"), {"extra": "1"})

    shapes = _same(script)
    assert [s["name"] for s in shapes] == ["child", "failing", "direct", "renamed"]
    failing = shapes[1]
    assert failing["status"] == (StatusCode.ERROR, "ValueError: bad input")
    assert failing["events"][0][1]["exception.type"] == "ValueError"
    assert shapes[0]["parent"] is not None
    assert len(shapes[0]["links"]) == 2


def test_a_span_the_sampler_drops_records_nothing() -> None:
    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span("dropped")
        assert not span.is_recording()
        assert span.get_span_context().is_valid
        span.set_attribute("k", "v")
        span.end()

    assert _same(script, sampler=ALWAYS_OFF) == []


def test_a_remote_parent_is_continued() -> None:
    parent = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    ends: list[tuple[int, int]] = []

    def script(tracer: trace.Tracer) -> None:
        span: Any = tracer.start_span("server", context, kind=SpanKind.SERVER)
        span.end()
        ends.append((span.get_span_context().trace_id, span.parent.span_id))

    _same(script)
    assert ends[0] == ends[1] == (parent.trace_id, parent.span_id)


def test_a_hashed_resource_is_the_resource_it_was_made_from() -> None:
    made = Resource.create({"service.name": "gw", "k": "v"})
    hashed = HashedResource(made)
    assert hashed == made
    assert hash(hashed) == hash(made)
    assert dict(hashed.attributes) == dict(made.attributes)
    assert {made: 1}[hashed] == 1
