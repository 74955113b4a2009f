"""Traces as plain data: the records ``/traces.json`` serves, merged across gateways by trace
id, and laid out as waterfall rows (one per span, in tree order, with its depth).

Pure functions with no I/O, shared by the ``/traces`` page, ``gateway trace`` and the demo's
latency report, so the three cannot disagree about what a trace looks like.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "Row",
    "SpanRecord",
    "TraceRecord",
    "duration_ms",
    "merge",
    "rows",
    "span_record",
    "text",
    "trace_records",
]

# Attributes worth showing: those the gateway and OpenTelemetry's HTTP / RPC conventions set
# (`network.peer.*` names the replica of a pool an attempt went to).
# Anything else (a user's own span attributes may hold payload data) stays out of the view.
_SHOWN_PREFIXES = ("gateway.", "http.", "rpc.", "server.", "network.", "url.", "error.")
# The resource attribute naming the service (the SDK's ``SERVICE_NAME``; not imported from
# it, so that this module loads without the SDK).
SERVICE_NAME = "service.name"


class SpanRecord(TypedDict):
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None  # None for a root span
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    service: str
    start_ns: int  # Unix epoch nanoseconds
    end_ns: int
    status: str  # UNSET, OK or ERROR
    attributes: dict[str, Any]


class TraceRecord(TypedDict):
    trace_id: str
    start_ns: int
    end_ns: int
    spans: list[SpanRecord]


@dataclass(frozen=True)
class Row:
    """One line of a waterfall: a span and how deep it sits in its trace's tree."""

    span: SpanRecord
    depth: int


def span_record(span: ReadableSpan) -> SpanRecord:
    """A finished span as JSON-ready data."""
    context = span.context
    assert context is not None  # only finished, recorded spans reach the buffer
    parent = span.parent
    attributes = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith(_SHOWN_PREFIXES)
    }
    start = span.start_time or 0
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": str(span.resource.attributes.get(SERVICE_NAME, "")),
        "start_ns": start,
        "end_ns": span.end_time or start,
        "status": span.status.status_code.name,
        "attributes": attributes,
    }


def trace_records(
    traces: Mapping[int, Sequence[ReadableSpan]], last: int | None = None
) -> list[TraceRecord]:
    """Each trace's spans as records, oldest trace first; only the `last` ones if given."""
    records = [_trace([span_record(span) for span in spans]) for spans in traces.values()]
    return _latest(records, last)


def merge(sources: Iterable[Iterable[TraceRecord]], last: int | None = None) -> list[TraceRecord]:
    """One trace per trace id out of every source's traces (a span reported twice counts
    once), oldest first; only the `last` ones if given.

    Each gateway of a chain keeps only its own spans: merging their views rebuilds the tree.
    """
    spans: dict[str, dict[str, SpanRecord]] = {}
    for source in sources:
        for trace in source:
            kept = spans.setdefault(trace["trace_id"], {})
            for span in trace["spans"]:
                kept.setdefault(span["span_id"], span)
    return _latest([_trace(list(by_id.values())) for by_id in spans.values() if by_id], last)


def rows(trace: TraceRecord) -> list[Row]:
    """The trace's spans depth-first, children in start order. A span whose parent is not
    in the trace (the client's span, or one a gateway no longer keeps) is a root."""
    ids = {span["span_id"] for span in trace["spans"]}
    children: dict[str | None, list[SpanRecord]] = {}
    for span in sorted(trace["spans"], key=lambda s: (s["start_ns"], -s["end_ns"])):
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    laid_out: list[Row] = []
    # An explicit stack: traces come from the network, and recursion depth is no limit there.
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        laid_out.append(Row(span, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(span["span_id"], [])))
    return laid_out


def duration_ms(span: SpanRecord) -> float:
    return (span["end_ns"] - span["start_ns"]) / 1e6


def _trace(spans: list[SpanRecord]) -> TraceRecord:
    return {
        "trace_id": spans[0]["trace_id"],
        "start_ns": min(span["start_ns"] for span in spans),
        "end_ns": max(span["end_ns"] for span in spans),
        "spans": spans,
    }


def _latest(traces: list[TraceRecord], last: int | None) -> list[TraceRecord]:
    traces.sort(key=lambda trace: trace["start_ns"])
    return traces if last is None else traces[max(len(traces) - last, 0) :]


def text(trace: TraceRecord, columns: int = 100, bar: str = "█") -> list[str]:
    """The trace as terminal lines at most about `columns` wide: a header, then per span
    its indented name, service, a bar of `bar` on the trace's time axis, and its duration."""
    laid_out = rows(trace)
    start, total = trace["start_ns"], max(trace["end_ns"] - trace["start_ns"], 1)
    names = [f"{'  ' * row.depth}{row.span['name']}" for row in laid_out]
    # Names get up to half the line: the bars need the rest to be readable.
    name_width = min(max(map(len, names), default=0), max(columns // 2, 20))
    service_width = max((len(row.span["service"]) for row in laid_out), default=0)
    # What is left once the name, service and duration columns have theirs (at least 10).
    width = max(columns - name_width - service_width - 20, 10)
    services = ", ".join(sorted({span["service"] for span in trace["spans"]}))
    lines = [f"trace {trace['trace_id']}  {total / 1e6:.2f} ms  ({services})"]
    for row, name in zip(laid_out, names, strict=True):
        span = row.span
        first = min(int(width * (span["start_ns"] - start) / total), width - 1)
        last = max(first + 1, round(width * (span["end_ns"] - start) / total))
        cells = " " * first + bar * (min(last, width) - first)
        failed = " FAILED" if span["status"] == "ERROR" else ""
        lines.append(
            f"  {_fit(name, name_width)}  {span['service']:<{service_width}}  "
            f"|{cells:<{width}}| {duration_ms(span):7.2f} ms{failed}"
        )
    return lines


def _fit(name: str, width: int) -> str:
    return name.ljust(width) if len(name) <= width else name[: width - 1] + "…"
