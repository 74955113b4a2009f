"""Where a sampled request's trace ids leave the process: the ``traceresponse`` its answer
carries, the ``trace_id`` / ``span_id`` of its log lines and the exemplars of its latencies.

Only the OpenTelemetry API is used. Callers ask only when the request has a tracer, so
tracing off costs nothing here; a request that was not sampled gets None everywhere (its ids
would lead to no exported trace).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext

__all__ = [
    "exemplar",
    "log_ids",
    "sampled",
    "traceresponse",
]


def sampled(span: Span | None = None) -> SpanContext | None:
    """The context of `span` (default: the current span) when it is sampled."""
    context = (span or trace.get_current_span()).get_span_context()
    return context if context.trace_flags.sampled else None


def traceresponse(span: Span | None = None) -> str | None:
    """``00-<trace id>-<span id>-<flags>`` of `span` (default: the current one) if sampled."""
    ids = _ids(span)
    return None if ids is None else ids[2]


def log_ids(span: Span | None = None) -> tuple[str, str] | None:
    """(trace_id, span_id) in hex, as OpenTelemetry's logging instrumentation writes them."""
    ids = _ids(span)
    return None if ids is None else ids[0]


def exemplar(span: Span | None = None) -> dict[str, str] | None:
    """The labels of an OpenMetrics exemplar pointing at `span` (default: the current one).
    The same dict for every call on a span: not to be changed."""
    ids = _ids(span)
    return None if ids is None else ids[1]


_Ids = tuple[tuple[str, str], dict[str, str], str]
# The last span asked about, and its ids: a request asks up to five times (its answer, its two
# log lines, its two exemplars) about its SERVER span.
_last: tuple[object, _Ids | None] = (None, None)


def _ids(span: Span | None) -> _Ids | None:
    global _last
    if span is None:
        span = trace.get_current_span()
    last = _last
    if last[0] is span:
        return last[1]
    context = span.get_span_context()
    ids: _Ids | None = None
    if context.trace_flags.sampled:
        trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        ids = (
            (trace_id, span_id),
            {"trace_id": trace_id, "span_id": span_id},
            f"00-{trace_id}-{span_id}-{context.trace_flags:02x}",
        )
    _last = (span, ids)
    return ids
