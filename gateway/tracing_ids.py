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
    context = sampled(span)
    if context is None:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def log_ids(span: Span | None = None) -> tuple[str, str] | None:
    """(trace_id, span_id) in hex, as OpenTelemetry's logging instrumentation writes them."""
    context = sampled(span)
    if context is None:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def exemplar(span: Span | None = None) -> dict[str, str] | None:
    """The labels of an OpenMetrics exemplar pointing at `span` (default: the current one)."""
    ids = log_ids(span)
    return None if ids is None else {"trace_id": ids[0], "span_id": ids[1]}
