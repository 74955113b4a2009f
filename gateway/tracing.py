"""Tracing: a tracer built from the standard ``OTEL_*`` variables, and W3C context propagation.

Tracing is off unless an exporter is asked for (``OTEL_EXPORTER_OTLP_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp`` / ``console``). Off means no tracer at all: the servers and hops
get None and skip every span, so the cost is one ``is None`` test. On, `configure_tracing`
returns a tracer of a provider of our own, never the global one, and the servers and hops are
given it explicitly; tests do the same with an in-memory exporter.

Context travels as W3C ``traceparent`` / ``tracestate`` and ``baggage`` headers (gRPC metadata
uses the same lowercase keys), whatever ``OTEL_PROPAGATORS`` says: every hop of the gateway
must agree, so the propagator is fixed here rather than read from the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from gateway.version import __version__

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "RecentSpans",
    "TracingSettings",
    "configure_tracing",
    "extract",
    "inject",
    "recent_spans",
    "server_span",
    "tracer_provider",
]

logger = logging.getLogger("gateway.tracing")

DEFAULT_SERVICE_NAME = "inference-hop-gateway"
EXPORTERS = ("otlp", "console")
# The instrumentation scope every gateway span carries.
SCOPE = "gateway"

_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@dataclass(frozen=True)
class TracingSettings:
    """Which exporters get the spans, and the service they are reported under."""

    # "otlp" and/or "console"; empty means tracing is off.
    exporters: tuple[str, ...] = ()
    service_name: str = DEFAULT_SERVICE_NAME
    # The OTLP/HTTP traces URL; None lets the exporter use its default (localhost:4318).
    endpoint: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings:
        """Read the standard OpenTelemetry variables (only those that decide what we build;
        the exporter reads its own headers, certificates, compression and timeout)."""
        service = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=service)
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint = traces_endpoint or (
            # The generic endpoint is a base URL: OTLP/HTTP puts traces under /v1/traces.
            f"{base_endpoint.rstrip('/')}/v1/traces" if base_endpoint else None
        )
        names = environ.get("OTEL_TRACES_EXPORTER")
        if names is None:
            exporters: tuple[str, ...] = ("otlp",) if endpoint else ()
        else:
            exporters = _exporter_names(names)
        if "otlp" in exporters:
            protocol = environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            )
            if protocol and protocol.strip() != "http/protobuf":
                logger.warning("OTLP protocol %r is not supported; using http/protobuf", protocol)
        return cls(exporters=exporters, service_name=service, endpoint=endpoint)


def _exporter_names(value: str) -> tuple[str, ...]:
    names = []
    for name in (n.strip().lower() for n in value.split(",")):
        if name in EXPORTERS and name not in names:
            names.append(name)
        elif name not in ("", "none"):
            logger.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return tuple(names)


def tracer_provider(
    settings: TracingSettings, extra_processors: Sequence[SpanProcessor] = ()
) -> TracerProvider | None:
    """A provider exporting as `settings` say, plus `extra_processors`; None when there is
    nothing to send spans to. The global provider is left alone."""
    if not settings.enabled and not extra_processors:
        return None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name}),
        # Flush batched spans when the process exits; a provider with only in-memory
        # processors has nothing to flush.
        shutdown_on_exit=settings.enabled,
    )
    for name in settings.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider


def configure_tracing(
    settings: TracingSettings | None = None,
    extra_processors: Sequence[SpanProcessor] = (),
    *,
    environ: Mapping[str, str] | None = None,
) -> Tracer | None:
    """The gateway's tracer, or None when tracing is off.

    `settings` default to those of `environ` (default: the process environment).
    """
    if settings is None:
        settings = TracingSettings.from_env(os.environ if environ is None else environ)
    provider = tracer_provider(settings, extra_processors)
    if provider is None:
        return None
    logger.info(
        "tracing on: service %s, exporters %s",
        settings.service_name,
        ", ".join(settings.exporters) or "in-process only",
    )
    return provider.get_tracer(SCOPE, __version__)


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=settings.service_name)
    # Imported here: it pulls in requests, which a gateway with tracing off never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint)


# Propagation


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context (and baggage) an inbound request carried; empty when none."""
    return _PROPAGATOR.extract(headers)


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Write the current (or `context`'s) trace context and baggage into `headers`."""
    _PROPAGATOR.inject(headers, context)


@contextlib.contextmanager
def server_span(
    tracer: Tracer, name: str, headers: Mapping[str, str], attributes: Attributes = None
) -> Iterator[Span]:
    """A SERVER span, current inside the block, continuing the trace `headers` carry.

    The caller sets the status and records what failed: a REST handler's errors become
    responses, and gRPC's abort raises an exception that is no error of its own.
    """
    with tracer.start_as_current_span(
        name,
        context=extract(headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


# Recent spans, for a latency view of the traces this process took part in


class RecentSpans(SpanProcessor):
    """Keeps the last `capacity` finished spans, grouped by trace (oldest trace first), and
    at most `max_traces` traces when given.

    When full, the oldest trace gives up its oldest span (or, past `max_traces`, all of its
    spans): the memory stays bounded however many spans one trace has.
    """

    def __init__(self, capacity: int = 2048, max_traces: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be 1 or more, not {capacity}")
        if max_traces is not None and max_traces < 1:
            raise ValueError(f"max_traces must be 1 or more, not {max_traces}")
        self.capacity = capacity
        self.max_traces = max_traces
        self._size = 0
        # Insertion order is the order traces were first seen: the first one is the oldest.
        self._traces: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        # Spans end on the event loop and in executor threads alike.
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        with self._lock:
            self._traces.setdefault(context.trace_id, []).append(span)
            self._size += 1
            if self.max_traces is not None and len(self._traces) > self.max_traces:
                _, dropped = self._traces.popitem(last=False)
                self._size -= len(dropped)
            if self._size > self.capacity:
                oldest = next(iter(self._traces))
                spans = self._traces[oldest]
                # A trace's spans were added in order, so its first one is the oldest.
                del spans[0]
                self._size -= 1
                if not spans:
                    del self._traces[oldest]

    def traces(self) -> dict[int, list[ReadableSpan]]:
        """trace id -> its spans still kept, in the order they ended."""
        with self._lock:
            return {trace_id: list(spans) for trace_id, spans in self._traces.items()}

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        with self._lock:
            return list(self._traces.get(trace_id, ()))

    def clear(self) -> None:
        with self._lock:
            self._size = 0
            self._traces.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# Spans kept per trace: a chained request leaves about six in each gateway; retries add more.
SPANS_PER_TRACE = 32


def recent_spans(traces: int) -> RecentSpans | None:
    """A buffer of the last `traces` traces (``--trace_buffer``); None when 0 (off)."""
    if traces <= 0:
        return None
    return RecentSpans(capacity=traces * SPANS_PER_TRACE, max_traces=traces)
