"""Propagators from ``OTEL_PROPAGATORS``: B3 (single and multi) and Jaeger inbound and on every
hop, over REST headers and gRPC metadata, with real servers on loopback.

The in-process tests install the propagators as ``OTEL_PROPAGATORS`` would (each package's
entry point, composed) as OpenTelemetry's global text map, and put the previous one back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from importlib.metadata import entry_points
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from gateway import tracing
from gateway._proto import pb
from gateway.hops.factory import build_hop
from gateway.hops.settings import HopSettings
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.tracing_propagation import TRACE_HEADERS
from tests import test_tracing
from tests.hops.upstreams import serve_model_infer
from tests.server.procs import ROOT
from tests.test_tracing import (
    BODY,
    GRPC_INFER,
    V2_INFER,
    chain,
    dataplane_of,
    parent_id,
    provider_for,
    serve_rest,
    service,
    span_id,
)

TRACE = "463ac35c9f6413ad48485a3953bb6124"
PARENT = "a2fb4a1d1a96d312"
# The same inbound trace in each format; header names as clients spell them.
INBOUND = {
    "b3multi": {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT, "X-B3-Sampled": "1"},
    "b3": {"b3": f"{TRACE}-{PARENT}-1"},
    "jaeger": {"Uber-Trace-Id": f"{TRACE}:{PARENT}:0:1"},
}
# Every trace header a client may send, none of them naming the trace above.
STALE = {
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "1",
    "uber-trace-id": "80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1",
}

# The in-memory exporter and a tracer exporting to it, shared with tests/test_tracing.py.
exporter = test_tracing.exporter
tracer = test_tracing.tracer


def configured(names: str) -> TextMapPropagator:
    """What ``OTEL_PROPAGATORS=names`` makes: each package's entry point, composed."""
    found = [
        next(iter(entry_points(group="opentelemetry_propagator", name=name))).load()()
        for name in names.split(",")
    ]
    return CompositePropagator(found)


@contextmanager
def propagators(names: str) -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(configured(names))
    try:
        yield
    finally:
        propagate.set_global_textmap(before)


def test_otel_propagators_decides_the_formats() -> None:
    code = "from gateway import tracing_propagation as t\nprint(sorted(t.propagator().fields))"
    fields = {}
    for names in ("", "b3multi,jaeger", "b3,tracecontext"):
        env = {k: v for k, v in os.environ.items() if k != "OTEL_PROPAGATORS"}
        if names:
            env["OTEL_PROPAGATORS"] = names
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        fields[names] = result.stdout.strip()
    assert fields[""] == "['baggage', 'traceparent', 'tracestate']"
    assert (
        fields["b3multi,jaeger"]
        == "['uber-trace-id', 'x-b3-sampled', 'x-b3-spanid', 'x-b3-traceid']"
    )
    assert fields["b3,tracecontext"] == "['b3', 'traceparent', 'tracestate']"


@pytest.mark.parametrize("names", ["b3multi", "b3", "jaeger"])
def test_extract_reads_rest_headers_and_grpc_metadata_alike(names: str) -> None:
    inbound = INBOUND[names]
    rest = CIMultiDictProxy(CIMultiDict(inbound))
    grpc_metadata = {key.lower(): value for key, value in inbound.items()}
    with propagators(names):
        for carrier in (rest, grpc_metadata):
            context = trace.get_current_span(tracing.extract(carrier)).get_span_context()
            assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (TRACE, PARENT)
            assert context.trace_flags.sampled


def test_inject_replaces_every_stale_trace_header_and_writes_lowercase() -> None:
    with propagators("jaeger,baggage"):
        context = tracing.extract({"uber-trace-id": f"{TRACE}:{PARENT}:0:1", "baggage": "Tenant=a"})
        outbound = {"x-request-id": "r", "traceparent": "00-stale", **STALE}
        tracing.inject(outbound, context)
    assert outbound.pop("uber-trace-id").startswith(f"{TRACE}:{PARENT}:")
    assert outbound == {"x-request-id": "r", "uberctx-tenant": "a", "baggage": "Tenant=a"}


# Gateways on loopback, entered with each format


@pytest.mark.parametrize("names", ["b3multi", "b3", "jaeger"])
async def test_two_gateways_and_a_predictor_entered_with_b3_or_jaeger_make_one_trace(
    names: str, exporter: InMemorySpanExporter
) -> None:
    """A (REST) -> B (REST) -> the predictor C (gRPC), every hop in the inbound format."""
    tracers: list[Tracer | None] = [
        provider_for(exporter, name).get_tracer("gateway") for name in "ABC"
    ]
    with propagators(names):
        async with AsyncExitStack() as stack:
            host = await chain(stack, tracers)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            url = f"http://{host}/v2/models/m/infer"
            async with session.post(url, json=BODY, headers=INBOUND[names]) as response:
                assert response.status == 200
                assert (await response.json())["outputs"][0]["data"] == [1.0, 2.0]

    spans = exporter.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans if s.context} == {TRACE}, "one trace"
    named = {f"{service(s)}:{s.name}": s for s in spans}
    assert parent_id(named[f"A:{V2_INFER}"]) == int(PARENT, 16), "the client's span is the root"
    # Each server continues its caller's attempt: over REST headers, then gRPC metadata.
    assert parent_id(named[f"B:{V2_INFER}"]) == span_id(named["A:hop predictor"])
    assert parent_id(named[f"C:{GRPC_INFER}"]) == span_id(named["B:hop predictor"])
    assert named[f"C:{GRPC_INFER}"].kind is SpanKind.SERVER


async def gateway_to(
    stack: AsyncExitStack, upstream: str, protocol: str, tracer: Tracer | None
) -> str:
    """A transformer gateway on loopback forwarding to `upstream`; its host."""
    transformer = Model("m")
    transformer.ready = True
    settings = HopSettings("predictor", upstream, "m", protocol)
    transformer.predictor_hop = build_hop(settings, metrics=Metrics(), tracer=tracer)
    stack.push_async_callback(transformer.predictor_hop.aclose)
    return await serve_rest(stack, dataplane_of(transformer), tracer)


async def headers_seen_upstream(tracer: Tracer | None, inbound: dict[str, str]) -> dict[str, str]:
    """The headers a REST predictor receives from a gateway sent `inbound`."""
    seen: list[dict[str, str]] = []

    async def predictor(request: web.Request) -> web.Response:
        seen.append({key.lower(): value for key, value in request.headers.items()})
        return web.json_response({"model_name": "m", "outputs": []})

    app = web.Application()
    app.router.add_post("/v2/models/m/infer", predictor)
    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(TestServer(app, host="127.0.0.1", port=0))
        host = await gateway_to(stack, f"127.0.0.1:{upstream.port}", "v2", tracer)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        async with session.post(f"http://{host}/v2/models/m/infer", json=BODY, headers=inbound):
            pass
    (headers,) = seen
    return headers


def attempt(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    return span


async def test_a_hop_sends_the_configured_format_only_never_stale_inbound_headers(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    inbound = {"traceparent": f"00-{TRACE}-{PARENT}-01", "baggage": "tenant=acme", **STALE}
    with propagators("tracecontext,baggage"):
        seen = await headers_seen_upstream(tracer, inbound)
    context = attempt(exporter).context
    assert context is not None
    assert seen["traceparent"] == f"00-{TRACE}-{context.span_id:016x}-01"
    assert seen["baggage"] == "tenant=acme"
    assert not set(STALE) & set(seen), "no inbound B3 or Jaeger header beside the traceparent"

    exporter.clear()
    inbound = {
        **INBOUND["b3multi"],
        "X-B3-ParentSpanId": STALE["x-b3-parentspanid"],
        "X-B3-Flags": "1",
        "uber-trace-id": STALE["uber-trace-id"],
        "traceparent": f"00-{STALE['x-b3-traceid']}-{STALE['x-b3-spanid']}-01",
    }
    with propagators("b3multi"):
        seen = await headers_seen_upstream(tracer, inbound)
    context = attempt(exporter).context
    assert context is not None
    sent = {key: value for key, value in seen.items() if key in TRACE_HEADERS}
    assert sent == {
        "x-b3-traceid": TRACE,
        "x-b3-spanid": f"{context.span_id:016x}",
        "x-b3-sampled": "1",
    }


async def test_with_tracing_off_the_inbound_trace_headers_pass_as_they_came() -> None:
    inbound = {"traceparent": f"00-{TRACE}-{PARENT}-01", "baggage": "tenant=acme", **STALE}
    with propagators("b3multi"):
        seen = await headers_seen_upstream(None, inbound)
    assert {key: seen[key] for key in inbound} == inbound


async def test_grpc_metadata_carries_the_configured_format_in_lowercase(
    tracer: Tracer, exporter: InMemorySpanExporter
) -> None:
    seen: list[dict[str, Any]] = []

    async def predictor(data: bytes, context: Any) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        answer: bytes = pb.ModelInferResponse(model_name="m").SerializeToString()
        return answer

    inbound = {**INBOUND["jaeger"], "Uberctx-Tenant": "acme", **STALE}
    del inbound["uber-trace-id"]  # the client's own, spelt as it likes, stays
    with propagators("jaeger"):
        async with serve_model_infer(predictor) as address, AsyncExitStack() as stack:
            host = await gateway_to(stack, address, "grpc-v2", tracer)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            url = f"http://{host}/v2/models/m/infer"
            async with session.post(url, data=orjson.dumps(BODY), headers=inbound) as response:
                assert response.status == 200, await response.text()
    context = attempt(exporter).context
    assert context is not None
    (metadata,) = seen
    assert metadata["uber-trace-id"].startswith(f"{TRACE}:{context.span_id:016x}:")
    assert metadata["uberctx-tenant"] == "acme"
    assert not {key for key in metadata if key != key.lower()}
    assert not (set(STALE) - {"uber-trace-id"}) & set(metadata)
