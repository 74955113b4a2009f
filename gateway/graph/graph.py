"""`Graph`: an inference graph that runs, and is itself a `Hop`.

    spec = load_graph("graph.yaml", services={"classifier": "http://127.0.0.1:8081/v1/models/c:predict"})
    graph = Graph(spec, hops={"classifier": hop})      # one hop per service, MockHop welcome
    answer = await graph.infer(request, headers)        # dict in -> dict out, v2 in -> v2 out

A transformer can hold one and call it from ``predict``, or take it as its predictor hop
(``model.predictor_hop = graph``). The request's one deadline is shared by every step;
``routerTimeouts.serviceClient`` caps each call to a service within it.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections.abc import Mapping
from typing import Any

from gateway import request_context
from gateway.errors import InvalidInput, UnsupportedProtocol, UpstreamTimeout
from gateway.graph.observe import GraphMetrics, Observed
from gateway.graph.routers import ROUTERS
from gateway.graph.spec import GraphSpec, GraphSpecError, Node, Step
from gateway.hops.base import Headers, Hop
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.metrics import Metrics
from gateway.passthrough import Passthrough
from gateway.request_context import RequestContext

__all__ = ["Graph"]


class Graph(Hop):
    """Runs `spec`, calling each service step through ``hops[step.service]``.

    The graph owns the hops it is given: `aclose` closes them. `metrics` adds the per-node and
    per-step histograms to the server's registry; `rng` draws the Splitter's picks (seed it
    for repeatable tests).
    """

    protocol = "graph"

    def __init__(
        self,
        spec: GraphSpec,
        hops: Mapping[str, Hop],
        *,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        for step in spec.steps():
            if step.service is not None and step.service not in hops:
                raise GraphSpecError(f"{step.where()}: no hop for service {step.service!r}")
        self.spec = spec
        self.name = spec.name
        self.hops = dict(hops)
        self._rng = rng or random.Random()
        self._cap = spec.router_timeouts.service_client
        graph_metrics = GraphMetrics.of(metrics) if metrics is not None else None
        self._nodes = {
            n.name: Observed.node(spec.name, n, graph_metrics) for n in spec.nodes.values()
        }
        self._steps = {
            (s.node, s.index): Observed.step(spec.name, s, graph_metrics) for s in spec.steps()
        }

    async def infer(self, payload: Any, headers: Headers) -> Any:
        """The root node's answer to `payload`: a dict (any JSON object) or an `InferRequest`."""
        if isinstance(payload, Passthrough):
            raise UnsupportedProtocol(
                payload.protocol, f"graph {self.name!r} takes decoded requests, not a pass-through"
            )
        if not isinstance(payload, dict | InferRequest):
            raise InvalidInput(
                f"graph {self.name!r} takes a JSON object or a v2 request, "
                f"not {type(payload).__name__}"
            )
        if isinstance(payload, InferRequest) and payload.request_outputs:
            # The outputs a client asks for are the graph's (the server picks them from its
            # answer), not any step's.
            payload = copy.copy(payload)
            payload.request_outputs = None
        answer = await self._node(self.spec.root, payload, headers)
        if isinstance(payload, InferRequest) and isinstance(answer, InferResponse):
            # The client called the graph: the answer is the graph's, not its last step's.
            answer.model_name = payload.model_name
            answer.model_version = payload.model_version
        return answer

    async def explain(self, payload: Any, headers: Headers) -> Any:
        raise UnsupportedProtocol("graph", f"graph {self.name!r} has no explain")

    async def ready(self, model_name: str | None = None) -> bool:
        """Whether every service the graph calls is ready."""
        for hop in self._distinct_hops():
            if not await hop.ready():
                return False
        return True

    async def aclose(self) -> None:
        for hop in self._distinct_hops():
            await hop.aclose()

    def _distinct_hops(self) -> list[Hop]:
        return list({id(hop): hop for hop in self.hops.values()}.values())

    async def _node(self, node: Node, payload: Any, headers: Headers) -> Any:
        async def call(step: Step, request: Any) -> Any:
            return await self._step(step, request, headers)

        with self._nodes[node.name].run():
            return await ROUTERS[node.router_type](node, payload, call, self._rng)

    async def _step(self, step: Step, payload: Any, headers: Headers) -> Any:
        with self._steps[(step.node, step.index)].run():
            if step.node_name is not None:
                return await self._node(self.spec.nodes[step.node_name], payload, headers)
            hop = self.hops[step.service]  # type: ignore[index]
            context = request_context.current()
            remaining = None if context is None else context.remaining()
            if remaining is not None and remaining <= 0:
                raise UpstreamTimeout(
                    f"the request's deadline passed before {step.where()}", upstream=hop.name
                )
            if self._cap is None or (remaining is not None and remaining <= self._cap):
                return await hop.infer(payload, headers)
            with request_context.serving(_capped(context, self._cap)):
                return await hop.infer(payload, headers)


def _capped(context: RequestContext | None, seconds: float) -> RequestContext:
    """The current request with a deadline `seconds` from now (its timings stay shared)."""
    deadline = time.monotonic() + seconds
    if context is None:
        return RequestContext(request_id="", protocol="graph", deadline=deadline)
    return dataclasses.replace(context, deadline=deadline)
