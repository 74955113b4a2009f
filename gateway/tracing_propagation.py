"""Trace context in and out, in the formats ``OTEL_PROPAGATORS`` names.

The propagators are OpenTelemetry's global text map, which `opentelemetry.propagate` composes
from ``OTEL_PROPAGATORS`` through the propagator packages' entry points (``tracecontext``,
``baggage``, ``b3``, ``b3multi``, ``jaeger``, several at once; default
``tracecontext,baggage``). That module is imported on first use, which only tracing makes:
with tracing off nothing here runs, and the hops forward the inbound trace headers as they are
(`TRACE_HEADERS`), so the caller's trace goes on past a gateway that takes no part in it.

Outbound, the trace headers of every format are taken out before the configured propagators
write theirs: a B3 or Jaeger header the client sent, forwarded beside a ``traceparent`` naming
another span, would give the upstream two parents. Baggage the client sent stays (the
configured propagators rewrite it when they carry baggage). Keys are written lowercase, as
gRPC metadata requires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator

from gateway.header_rules import TRACE_HEADERS

__all__ = ["TRACE_HEADERS", "extract", "inject", "propagator"]


class _Getter(Getter[Mapping[str, str]]):
    """Reads aiohttp's case-insensitive headers and gRPC's lowercase metadata alike (the
    propagators ask for lowercase keys)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        # Jaeger finds its baggage (uberctx-*) by prefix.
        return [key.lower() for key in carrier]


class _Setter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key.lower()] = value


_GETTER = _Getter()
_SETTER = _Setter()


def propagator() -> TextMapPropagator:
    """The propagators ``OTEL_PROPAGATORS`` names. The first call reads the variable and loads
    them: it raises ValueError naming one that is not installed."""
    # `from ... import` of a loaded module still runs importlib's Python code: done once.
    global _get_textmap
    if _get_textmap is None:
        from opentelemetry import propagate

        _get_textmap = propagate.get_global_textmap
    return _get_textmap()


_get_textmap: Callable[[], TextMapPropagator] | None = None


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context (and baggage) an inbound request carried; empty when none."""
    return propagator().extract(headers, getter=_GETTER)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Replace the trace headers in `headers` by the current (or `context`'s) trace context
    (and baggage), in every configured format."""
    stale = [key for key in headers if key.lower() in TRACE_HEADERS]
    for key in stale:
        del headers[key]
    propagator().inject(headers, context, setter=_SETTER)
