"""The trace data behind /traces, `gateway trace` and the demo's report: the recent-span
buffer, span records, merging by trace id, the tree layout, and the text and HTML views."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Tracer

from gateway import tracing
from gateway.flags import parser
from gateway.model_server import ModelServer
from gateway.server.traces_view import page
from gateway.tracing import RecentSpans
from gateway.waterfall import TraceRecord, merge, rows, text, trace_records


def _tracer(service: str, recent: RecentSpans) -> Tracer:
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(recent)
    return provider.get_tracer("test")


def _chain() -> tuple[list[TraceRecord], list[TraceRecord]]:
    """One request through two "processes": each keeps only its own spans."""
    front_spans, back_spans = RecentSpans(), RecentSpans()
    front, back = _tracer("front", front_spans), _tracer("back", back_spans)
    with front.start_as_current_span("POST /infer", kind=SpanKind.SERVER):
        with front.start_as_current_span("preprocess"):
            pass
        with front.start_as_current_span(
            "hop predictor", kind=SpanKind.CLIENT, attributes={"gateway.hop.protocol": "v2"}
        ):
            headers: dict[str, str] = {}
            tracing.inject(headers)
            context = tracing.extract(headers)
            server = back.start_as_current_span("ModelInfer", context=context, kind=SpanKind.SERVER)
            with server, back.start_as_current_span("predict"):
                pass
    return trace_records(front_spans.traces()), trace_records(back_spans.traces())


def test_recent_spans_keeps_at_most_max_traces_whole_traces() -> None:
    recent = RecentSpans(capacity=100, max_traces=2)
    tracer = _tracer("svc", recent)
    ids = []
    for name in ("one", "two", "three"):
        with tracer.start_as_current_span(name) as span:
            tracer.start_span(f"{name}-child").end()
        ids.append(span.get_span_context().trace_id)
    traces = recent.traces()
    assert list(traces) == ids[1:]
    assert [s.name for s in traces[ids[2]]] == ["three-child", "three"]
    with pytest.raises(ValueError, match="max_traces"):
        RecentSpans(max_traces=0)


def test_recent_spans_capacity_bounds_spans_across_traces() -> None:
    recent = RecentSpans(capacity=3, max_traces=10)
    tracer = _tracer("svc", recent)
    for name in ("a", "b"):
        with tracer.start_as_current_span(name):
            tracer.start_span(f"{name}-child").end()
    kept = [span.name for spans in recent.traces().values() for span in spans]
    assert kept == ["a", "b-child", "b"]  # the oldest trace gave up its oldest span
    recent.clear()
    assert recent.traces() == {}


def test_trace_buffer_flag_reaches_the_settings_and_sizes_the_buffer() -> None:
    args = parser.parse_args(["--trace_buffer", "7"])
    assert ModelServer(args=args, configure_logging=False).settings.trace_buffer == 7
    assert parser.parse_args([]).trace_buffer == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--trace_buffer", "-1"])
    assert tracing.recent_spans(0) is None
    buffer = tracing.recent_spans(7)
    assert buffer is not None
    assert buffer.max_traces == 7


def test_span_records_carry_ids_service_timing_and_chosen_attributes() -> None:
    recent = RecentSpans()
    tracer = _tracer("front", recent)
    outer = tracer.start_as_current_span("root", attributes={"http.route": "/x", "secret": "no"})
    with outer, tracer.start_as_current_span("child"):
        pass
    (trace,) = trace_records(recent.traces())
    child, root = trace["spans"]
    assert root["parent_id"] is None
    assert child["parent_id"] == root["span_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", root["trace_id"])
    assert root["service"] == "front"
    assert root["kind"] == "INTERNAL"
    assert root["attributes"] == {"http.route": "/x"}  # only the gateway's and semconv's
    assert trace["start_ns"] == root["start_ns"] <= child["start_ns"] <= child["end_ns"]


def test_merge_rebuilds_one_tree_from_each_process_view() -> None:
    front, back = _chain()
    merged = merge([front, back, back])  # a source given twice counts once
    (trace,) = merged
    laid_out = [(row.span["name"], row.span["service"], row.depth) for row in rows(trace)]
    assert laid_out == [
        ("POST /infer", "front", 0),
        ("preprocess", "front", 1),
        ("hop predictor", "front", 1),
        ("ModelInfer", "back", 2),
        ("predict", "back", 3),
    ]
    # Alone, the back end's server span has no parent here: it is the root.
    assert [row.depth for row in rows(back[0])] == [0, 1]


def test_merge_keeps_the_last_traces_oldest_first() -> None:
    recent = RecentSpans()
    tracer = _tracer("svc", recent)
    for name in ("a", "b", "c"):
        tracer.start_span(name).end()
    traces = merge([trace_records(recent.traces())], last=2)
    assert [t["spans"][0]["name"] for t in traces] == ["b", "c"]


def test_text_waterfall_has_a_bar_per_span_on_the_trace_axis() -> None:
    (trace,) = merge(_chain())
    lines = text(trace, columns=100, bar="#")
    assert lines[0].startswith(f"trace {trace['trace_id']}")
    assert "(back, front)" in lines[0]
    assert len(lines) == 1 + len(trace["spans"])
    root_bar = lines[1].split("|")[1]
    assert set(root_bar) == {"#"}  # the root spans the whole axis
    for line in lines[1:]:
        assert line.split("|")[1].strip(" ")  # every span, however short, shows
        assert len(line) <= 100


def test_html_page_draws_one_waterfall_per_trace_and_escapes_names() -> None:
    recent = RecentSpans()
    tracer = _tracer("<svc>", recent)
    for name in ("<script>alert(1)</script>", "second"):
        with tracer.start_as_current_span(name):
            tracer.start_span("stage").end()
    traces = trace_records(recent.traces())
    html = page(traces, "recent", kept=5, data_url="/traces.json")
    assert html.count('<section class="waterfall"') == 2
    for trace in traces:
        assert f'data-trace-id="{trace["trace_id"]}"' in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "?last=5" in html
    assert "No traces yet" in page([], "recent")
