"""Each node and step of a graph as an INTERNAL span, a ``Server-Timing`` entry and a
Prometheus observation (the hop inside a step adds its CLIENT span per attempt).

Spans go to the current request's tracer (none: no spans, one ``is None`` test); timings to the
current request's context; metrics to the server's registry, by graph, node and step.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from prometheus_client import Histogram

from gateway import request_context
from gateway.graph.spec import Node, Step
from gateway.metrics import LATENCY_BUCKETS, Metrics

__all__ = ["GraphMetrics", "Observed"]

# Server-Timing names are HTTP tokens; a step name may hold anything.
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+\-.^_`|~]")


class GraphMetrics:
    """Time per node and per step, by outcome, in the server's registry (one set per registry:
    `of` hands every graph of a server the same one)."""

    _made: weakref.WeakKeyDictionary[Metrics, GraphMetrics] = weakref.WeakKeyDictionary()

    def __init__(self, metrics: Metrics) -> None:
        self.node_seconds = Histogram(
            "gateway_graph_node_seconds",
            "Time of each node of an inference graph, by outcome",
            ["graph", "node", "router", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
        self.step_seconds = Histogram(
            "gateway_graph_step_seconds",
            "Time of each step of an inference graph (all attempts of its hop), by outcome",
            ["graph", "node", "step", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )

    @classmethod
    def of(cls, metrics: Metrics) -> GraphMetrics:
        made = cls._made.get(metrics)
        if made is None:
            made = cls._made[metrics] = cls(metrics)
        return made


class Observed:
    """What is known of one node or step before it runs: its span's name and attributes, its
    timing's name and its metric's labels. `run()` gives the block that observes one run."""

    def __init__(
        self,
        kind: str,
        name: str,
        attributes: dict[str, AttributeValue],
        histogram: Histogram | None,
        labels: tuple[str, ...],
    ) -> None:
        self.span_name = f"{kind} {name}"
        self.stage = f"{kind}.{_NOT_TOKEN.sub('_', name)}"
        self.attributes = attributes
        self._histogram = histogram
        self._labels = labels
        self._children: dict[str, Any] = {}

    @classmethod
    def node(cls, graph: str, node: Node, metrics: GraphMetrics | None) -> Observed:
        attributes: dict[str, AttributeValue] = {
            "gateway.graph": graph,
            "gateway.graph.node": node.name,
            "gateway.graph.router": node.router_type.value,
        }
        histogram = metrics.node_seconds if metrics else None
        labels = (graph, node.name, node.router_type.value)
        return cls("node", node.name, attributes, histogram, labels)

    @classmethod
    def step(cls, graph: str, step: Step, metrics: GraphMetrics | None) -> Observed:
        attributes: dict[str, AttributeValue] = {
            "gateway.graph": graph,
            "gateway.graph.node": step.node,
            "gateway.graph.step": step.key,
            "gateway.graph.step.dependency": step.dependency.value,
            "gateway.graph.step.target": step.service or f"node {step.node_name}",
        }
        histogram = metrics.step_seconds if metrics else None
        labels = (graph, step.node, step.key)
        return cls("step", f"{step.node}.{step.key}", attributes, histogram, labels)

    def run(self) -> _Run:
        return _Run(self)

    def finished(self, outcome: str, seconds: float) -> None:
        if self._histogram is None:
            return
        child = self._children.get(outcome)
        if child is None:
            # labels() locks and hashes on every call: look each series up once.
            child = self._children[outcome] = self._histogram.labels(*self._labels, outcome)
        child.observe(seconds)


class _Run:
    """One run of a node or step: a span when the request is traced, its time recorded."""

    __slots__ = ("_context", "_observed", "_span", "_span_cm", "_start")

    def __init__(self, observed: Observed) -> None:
        self._observed = observed

    def __enter__(self) -> Span | None:
        self._context = context = request_context.current()
        self._span_cm: contextlib.AbstractContextManager[Span] | None = None
        self._span: Span | None = None
        if context is not None and context.tracer is not None:
            self._span_cm = context.tracer.start_as_current_span(
                self._observed.span_name,
                kind=SpanKind.INTERNAL,
                attributes=self._observed.attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            self._span = self._span_cm.__enter__()
        self._start = time.perf_counter()
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        seconds = time.perf_counter() - self._start
        outcome = "ok" if exc is None else type(exc).__name__
        try:
            if self._span is not None and exc is not None:
                if isinstance(exc, asyncio.CancelledError):
                    # A sibling failed: this run was stopped, it did not fail.
                    self._span.set_attribute("gateway.graph.cancelled", True)
                    outcome = "cancelled"
                else:
                    self._span.record_exception(exc)
                    self._span.set_status(Status(StatusCode.ERROR, f"{outcome}: {exc}"))
            if self._span_cm is not None:
                self._span_cm.__exit__(exc_type, exc, tb)
        finally:
            if isinstance(exc, asyncio.CancelledError):
                outcome = "cancelled"
            self._observed.finished(outcome, seconds)
            if self._context is not None:
                self._context.record(self._observed.stage, seconds)
