"""Every node and step of a graph: a span (nested as the graph is), a Server-Timing entry and
a Prometheus observation by graph, node, step and outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import generate_latest

from gateway.errors import UpstreamStatusError
from gateway.graph import Graph
from gateway.hops.base import Headers
from gateway.hops.mock import MockHop
from gateway.metrics import Metrics
from tests.graph.support import in_memory_tracer, request, spans_by_name, spec

GRAPH = """
nodes:
  root:
    routerType: Sequence
    steps:
    - {name: first, serviceName: a}
    - {name: fan, nodeName: both, data: $response}
  both:
    routerType: Ensemble
    steps:
    - {name: ok, serviceName: a}
    - {name: broken, serviceName: e}
"""


def failing(payload: Any, headers: Headers) -> Any:
    raise UpstreamStatusError("model exploded", status=500)


def graph(metrics: Metrics | None = None) -> Graph:
    return Graph(spec(GRAPH), {"a": MockHop(), "e": MockHop(failing)}, metrics=metrics)


async def test_nodes_and_steps_are_spans_of_one_trace() -> None:
    tracer, exporter = in_memory_tracer()
    with request(tracer), tracer.start_as_current_span("predict"):
        await graph().infer({"instances": [1]}, {})
    spans = spans_by_name(exporter)
    assert set(spans) == {
        "predict", "node root", "step root.first", "step root.fan", "node both",
        "step both.ok", "step both.broken",
    }  # fmt: skip
    assert len({span.context.trace_id for span in spans.values()}) == 1
    parents = {
        name: next(n for n, s in spans.items() if s.context.span_id == span.parent.span_id)
        for name, span in spans.items()
        if span.parent is not None
    }
    assert parents == {
        "node root": "predict",
        "step root.first": "node root",
        "step root.fan": "node root",
        "node both": "step root.fan",
        "step both.ok": "node both",
        "step both.broken": "node both",
    }
    assert {spans[name].kind for name in parents} == {SpanKind.INTERNAL}
    broken = spans["step both.broken"]
    assert broken.status.status_code is StatusCode.ERROR
    assert broken.attributes is not None
    assert broken.attributes["gateway.graph.step.dependency"] == "Soft"
    assert broken.attributes["gateway.graph.step.target"] == "e"
    # The Soft step failed; its node did not.
    assert spans["node both"].status.status_code is StatusCode.UNSET
    assert spans["node root"].attributes == {
        "gateway.graph": "g",
        "gateway.graph.node": "root",
        "gateway.graph.router": "Sequence",
    }


async def test_cancelled_siblings_are_marked_not_failed() -> None:
    async def slow(payload: Any, headers: Headers) -> Any:
        await asyncio.sleep(60)

    def fail(payload: Any, headers: Headers) -> Any:
        raise UpstreamStatusError("gone", status=404)

    tracer, exporter = in_memory_tracer()
    g = Graph(
        spec("""
        nodes:
          root:
            routerType: Ensemble
            steps: [{name: slow, serviceName: s}, {name: hard, serviceName: f, dependency: Hard}]
        """),
        {"s": MockHop(slow), "f": MockHop(fail)},
    )
    with request(tracer), pytest.raises(UpstreamStatusError):
        await asyncio.wait_for(g.infer({"instances": [1]}, {}), 10)
    spans = spans_by_name(exporter)
    slow_span = spans["step root.slow"]
    assert slow_span.attributes is not None
    assert slow_span.attributes["gateway.graph.cancelled"] is True
    assert slow_span.status.status_code is StatusCode.UNSET
    assert spans["node root"].status.status_code is StatusCode.ERROR


async def test_every_node_and_step_has_a_timing() -> None:
    with request() as context:
        await graph().infer({"instances": [1]}, {})
    stages = [stage for stage, _ in context.timings]
    assert sorted(stages) == sorted([
        "step.root.first", "step.both.ok", "step.both.broken", "node.both", "step.root.fan",
        "node.root",
    ])  # fmt: skip
    assert stages[-1] == "node.root"
    assert all(seconds >= 0 for _, seconds in context.timings)


async def test_timing_names_are_http_tokens() -> None:
    g = Graph(
        spec("nodes: {root: {routerType: Sequence, steps: [{name: 'a step, \"quoted\"', "
             "serviceName: a}]}}"),
        {"a": MockHop()},
    )  # fmt: skip
    with request() as context:
        await g.infer({"instances": [1]}, {})
    assert "step.root.a_step___quoted_" in {stage for stage, _ in context.timings}


async def test_per_step_metrics_in_the_servers_registry() -> None:
    metrics = Metrics()
    g = graph(metrics)
    for _ in range(3):
        await g.infer({"instances": [1]}, {})
    # A second graph of the same server shares the metrics (no duplicate registration).
    await graph(metrics).infer({"instances": [1]}, {})
    text = generate_latest(metrics.registry).decode()
    assert (
        'gateway_graph_step_seconds_count{graph="g",node="both",outcome="UpstreamStatusError",'
        'step="broken"} 4.0'
    ) in text
    assert (
        'gateway_graph_step_seconds_count{graph="g",node="root",outcome="ok",step="first"} 4.0'
        in text
    )
    assert (
        'gateway_graph_node_seconds_count{graph="g",node="both",outcome="ok",router="Ensemble"} 4.0'
    ) in text
