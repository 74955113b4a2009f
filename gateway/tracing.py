"""Tracing: a tracer built from the standard ``OTEL_*`` variables, and the SERVER span.

Tracing is off unless an exporter is asked for (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp`` / ``console``). Off
means no tracer at all: the servers and hops get None and skip every span, so the cost is one
``is None`` test, and neither the OpenTelemetry SDK nor an exporter is imported. On,
`configure_tracing` returns a tracer of a provider of our own, never the global one, and the
servers and hops are given it explicitly; tests do the same with an in-memory exporter.

Context travels in the formats ``OTEL_PROPAGATORS`` names (`gateway.tracing_propagation`);
the ids of a sampled request go into its answer, logs and exemplars (`gateway.tracing_ids`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context
from opentelemetry.util.types import AttributeValue

from gateway.tracing_propagation import extract, inject, propagator
from gateway.version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from gateway.request_context import RequestContext
    from gateway.tracing_recent import RecentSpans

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
# How OTLP travels: the values of OTEL_EXPORTER_OTLP_PROTOCOL that the Python exporters speak.
PROTOCOLS = ("http/protobuf", "grpc")
# The instrumentation scope every gateway span carries.
SCOPE = "gateway"


@dataclass(frozen=True)
class TracingSettings:
    """Which exporters get the spans, how OTLP travels, and the service they are reported
    under."""

    # "otlp" and/or "console"; empty means tracing is off.
    exporters: tuple[str, ...] = ()
    service_name: str = DEFAULT_SERVICE_NAME
    # The OTLP endpoint, given in code; None lets the exporter read its variables (or use its
    # default: localhost:4318 over HTTP, localhost:4317 over gRPC).
    endpoint: str | None = None
    # "http/protobuf" (OTLP's default) or "grpc".
    protocol: str = "http/protobuf"

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings:
        """Read the standard OpenTelemetry variables that decide what we build; the exporters
        read their own endpoint, headers, timeout, compression and TLS settings."""
        service = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=service)
        endpoint = any(
            environ.get(name, "").strip()
            for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        names = environ.get("OTEL_TRACES_EXPORTER")
        if names is None:
            exporters: tuple[str, ...] = ("otlp",) if endpoint else ()
        else:
            exporters = _exporter_names(names)
        return cls(exporters=exporters, service_name=service, protocol=_protocol(environ))


def _exporter_names(value: str) -> tuple[str, ...]:
    names = []
    for name in (n.strip().lower() for n in value.split(",")):
        if name in EXPORTERS and name not in names:
            names.append(name)
        elif name not in ("", "none"):
            logger.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return tuple(names)


def _protocol(environ: Mapping[str, str]) -> str:
    """The traces' OTLP protocol: the per-signal variable over the generic one."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip().lower()
        if value in PROTOCOLS:
            return value
        if value:
            logger.warning("%s=%r is not supported; using http/protobuf", name, value)
            break
    return "http/protobuf"


def tracer_provider(
    settings: TracingSettings, extra_processors: Sequence[SpanProcessor] = ()
) -> TracerProvider | None:
    """A provider exporting as `settings` say, plus `extra_processors`; None when there is
    nothing to send spans to. The global provider is left alone."""
    if not settings.enabled and not extra_processors:
        return None
    # Imported here: a gateway with tracing off never loads the SDK.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    from gateway.tracing_spans import HashedResource

    provider = TracerProvider(
        resource=HashedResource(Resource.create({SERVICE_NAME: settings.service_name})),
        # Flush batched spans when the process exits; a provider with only in-memory
        # processors has nothing to flush.
        shutdown_on_exit=settings.enabled,
    )
    if settings.enabled:
        from gateway import tracing_export

        for processor in tracing_export.processors(
            settings.exporters,
            service_name=settings.service_name,
            protocol=settings.protocol,
            endpoint=settings.endpoint,
        ):
            provider.add_span_processor(processor)
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

    `settings` default to those of `environ` (default: the process environment). Raises
    ValueError when ``OTEL_PROPAGATORS`` names a propagator that is not installed.
    """
    if settings is None:
        settings = TracingSettings.from_env(os.environ if environ is None else environ)
    provider = tracer_provider(settings, extra_processors)
    if provider is None:
        return None
    # Loaded now, so that a misspelt propagator stops the start, not every request.
    fields = sorted(propagator().fields)
    logger.info(
        "tracing on: service %s, exporters %s, propagating %s",
        settings.service_name,
        ", ".join(
            f"{name} ({settings.protocol})" if name == "otlp" else name
            for name in settings.exporters
        )
        or "in-process only",
        ", ".join(fields) or "nothing",
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from gateway.tracing_spans import LeanTracer

    sdk = provider.get_tracer(SCOPE, __version__)
    return LeanTracer(sdk, InstrumentationScope(SCOPE, __version__))  # type: ignore[arg-type]


class server_span:
    """A SERVER span, current inside the block, continuing the trace `headers` carry; it is
    also `context`'s span (for the access line, written after the block).

    `attributes` are set when the block ends, all at once: the caller may add to them until
    then (the outcome). The caller sets the status and records what failed: a REST handler's
    errors become responses, and gRPC's abort raises an exception that is no error of its own.
    A class, not the SDK's generator-based ``start_as_current_span``: it runs on every traced
    request.
    """

    __slots__ = ("_context", "_headers", "_name", "_span", "_token", "_tracer", "attributes")

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        headers: Mapping[str, str],
        attributes: dict[str, AttributeValue] | None = None,
        context: RequestContext | None = None,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._headers = headers
        self.attributes = {} if attributes is None else attributes
        self._context = context

    def __enter__(self) -> Span:
        # The inbound context is made current, not only the span's parent: its baggage then
        # travels on from every hop, in the formats configured.
        inbound = extract(self._headers)
        span = self._tracer.start_span(self._name, inbound, kind=SpanKind.SERVER)
        self._span = span
        self._token = otel_context.attach(set_span_in_context(span, inbound))
        if self._context is not None:
            self._context.span = span
        return span

    def __exit__(self, *exc: object) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
            # The sampler has decided: a span it dropped takes no attributes.
            if self.attributes and span.is_recording():
                span.set_attributes(self.attributes)
        finally:
            span.end()


def recent_spans(traces: int) -> RecentSpans | None:
    """A buffer of the last `traces` traces (``--trace_buffer``); None when 0 (off)."""
    if traces <= 0:
        return None
    from gateway.tracing_recent import SPANS_PER_TRACE, RecentSpans

    return RecentSpans(capacity=traces * SPANS_PER_TRACE, max_traces=traces)


def __getattr__(name: str) -> object:
    # `RecentSpans` is an SDK span processor: loaded when asked for, not with this module.
    if name == "RecentSpans":
        from gateway.tracing_recent import RecentSpans

        return RecentSpans
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
