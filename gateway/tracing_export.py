"""The span exporters ``OTEL_TRACES_EXPORTER`` names, each behind a batch processor.

Imported only when tracing is on. OTLP goes over gRPC or HTTP as
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` say (read by
``TracingSettings`` in `gateway.tracing`); the OTLP exporters read the rest of their standard
variables themselves (endpoint, headers, timeout, compression, certificates, client key and
certificate, and for gRPC ``insecure``), so each is built with nothing but an explicit endpoint
when one was given in code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from gateway import tracing_otlp

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

__all__ = ["processors"]


def processors(
    exporters: Sequence[str], *, service_name: str, protocol: str, endpoint: str | None
) -> list[SpanProcessor]:
    """A batch processor for each of `exporters` ("otlp", "console"); OTLP over `protocol`
    ("grpc" or "http/protobuf") to `endpoint` (None: as the variables say)."""
    return [
        BatchSpanProcessor(_exporter(name, service_name, protocol, endpoint)) for name in exporters
    ]


def _exporter(name: str, service_name: str, protocol: str, endpoint: str | None) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=service_name)
    # Imported here: each pulls in its transport (grpc's channel, requests), which a gateway
    # exporting the other way never needs. Both encode with `gateway.tracing_otlp`: the
    # SDK's encoder costs 5x as much CPU a span.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        class Exporter(GrpcExporter):
            def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
                return tracing_otlp.encode_request(data)

        return Exporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter

    if hasattr(http_exporter, "encode_spans"):
        # Its `export` encodes through this module global; there is no other seam.
        http_exporter.encode_spans = tracing_otlp.Encoded
    return http_exporter.OTLPSpanExporter(endpoint=endpoint)
