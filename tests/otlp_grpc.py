"""A test collector: OTLP over gRPC (``opentelemetry.proto.collector.trace.v1.TraceService``)
on a grpc.aio server on 127.0.0.1, keeping the spans it is sent and the metadata they came
with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class Exported:
    """One span as the collector received it; ids in lowercase hex ("" for no parent)."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []

    async def Export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        return ExportTraceServiceResponse()

    def spans(self) -> list[Exported]:
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = resource_spans.resource.attributes
                service = next(a.value.string_value for a in attributes if a.key == "service.name")
                for scope_spans in resource_spans.scope_spans:
                    found.extend(
                        Exported(
                            service,
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                        )
                        for span in scope_spans.spans
                    )
        return found

    def server_spans(self) -> list[Exported]:
        return [span for span in self.spans() if span.kind == Span.SPAN_KIND_SERVER]

    async def wait_for(
        self, predicate: Callable[[list[Exported]], bool], timeout: float = 20.0
    ) -> list[Exported]:
        """The spans once `predicate` holds for them; the event loop serves exports meanwhile."""
        for _ in range(int(timeout / 0.02)):
            spans = self.spans()
            if predicate(spans):
                return spans
            await asyncio.sleep(0.02)
        raise AssertionError(f"the collector did not get the spans expected; it has {spans}")


@asynccontextmanager
async def grpc_collector(
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[tuple[Collector, int]]:
    """A collector listening on 127.0.0.1 (with TLS given `credentials`), and its port."""
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    address = "127.0.0.1:0"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield collector, port
    finally:
        await server.stop(None)
