"""What the graph tests share: graphs from YAML, hops to real upstreams, a traced request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from gateway import request_context, tracing
from gateway.errors import UpstreamStatusError
from gateway.graph import Graph, GraphSpec, StepTarget, parse_graph
from gateway.hops.base import Headers, Hop
from gateway.hops.factory import build_hop
from gateway.hops.mock import MockHop
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.metrics import Metrics
from gateway.request_context import RequestContext
from gateway.tracing import TracingSettings

# KServe's e2e test services: one answers 200, the other an intentional 404.
SUCCESS = {"predictions": [{"message": "SUCCESS"}]}
NOT_FOUND_BODY = '{"detail":"Intentional 404 code"}'


def success() -> MockHop:
    return MockHop(lambda payload, headers: SUCCESS, name="success")


def error_404() -> MockHop:
    def fail(payload: Any, headers: Headers) -> Any:
        # What a REST hop raises for FastAPI's 404 body (the body is the message).
        raise UpstreamStatusError(NOT_FOUND_BODY, status=404, upstream="error")

    return MockHop(fail, name="error")


def answer(value: Any) -> MockHop:
    return MockHop(lambda payload, headers: value)


async def infer(graph: Graph, payload: Any) -> Any:
    return await graph.infer(payload, {"x-request-id": "r"})


def spec(text: str, services: Mapping[str, str] | None = None) -> GraphSpec:
    """The graph in `text`: a YAML spec's ``nodes`` (named "g"), or a whole resource."""
    document = yaml.safe_load(text)
    if "nodes" in document:
        return parse_graph({"nodes": document["nodes"]}, services=services, name="g")
    return parse_graph(document, services=services)


def hop_for(
    target: StepTarget,
    role: str,
    *,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
    retries: int = 0,
    rest_format: str = "auto",
) -> Hop:
    """A real hop to `target`, as the server's wiring will build one (the one place these
    tests know how hops are made)."""
    settings = HopSettings(
        role=role,
        host=target.host,
        model_name=target.model_name,
        protocol=target.protocol,
        use_ssl=target.use_ssl,
        timeout=30,
        retry=RetryPolicy(retries=retries, backoff_initial=0.01, backoff_max=0.05),
        rest_format=rest_format,
    )
    return build_hop(settings, metrics=metrics, tracer=tracer)


def hops_for(graph: GraphSpec, **options: Any) -> dict[str, Hop]:
    """A hop per service of `graph`, each named after its service."""
    hops = {}
    for service, target in graph.targets().items():
        assert target is not None, f"service {service!r} has no URL"
        hops[service] = hop_for(target, service.rsplit("/", 1)[-1], **options)
    return hops


def in_memory_tracer() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.tracer_provider(
        TracingSettings(service_name="graph-test"), [SimpleSpanProcessor(exporter)]
    )
    assert provider is not None
    return provider.get_tracer("test"), exporter


@contextlib.contextmanager
def request(
    tracer: Tracer | None = None, deadline: float | None = None
) -> Iterator[RequestContext]:
    """Serve the block as one inbound request (with `tracer`'s spans, and a deadline)."""
    context = RequestContext("req-1", "v2", deadline=deadline, tracer=tracer)
    with request_context.serving(context):
        yield context


def spans_by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}
