"""Inference graphs: KServe's ``InferenceGraph`` resource, run over our hops.

Public API::

    load_graph(path, services=None, name=None, default_name=None) -> GraphSpec
    parse_graph(document, services=None, name=None, default_name=None)
    GraphSpec, Node, Step, RouterType, Dependency, RouterTimeouts  frozen values
    GraphSpecError                                               invalid graph (a ValueError)
    StepTarget, parse_service_url(url), resolve_service(name, services)
    Condition                                                    a compiled GJSON condition
    Graph(spec, hops, metrics=None, rng=None)                    runs it; a Hop itself
    NoRouteMatched                                               a Switch matched nothing: 404
    error_body(exc)                                              a failed step's body, as KServe
                                                                 passes it on

Modules: `spec` (the values), `load` + `validate` (resource -> values, refusals), `targets`
(step URLs), `conditions` (GJSON), `payloads` (what passes between steps), `routers` (the four
router types), `observe` (spans, timings, metrics), `graph` (the runtime).

The wiring is one floor up, in `gateway.graph_wiring`: ``gateway serve --graph FILE --service
NAME=URL`` loads the graph (a `GraphSpecError` exits 2), builds one hop per service from the
server's flags, and serves the graph as the model it names (REST v1, REST v2, gRPC) and at
``POST /`` (`gateway.server.rest_graph`).
"""

from gateway.graph.conditions import Condition
from gateway.graph.graph import Graph
from gateway.graph.load import load_graph, parse_graph
from gateway.graph.payloads import error_body
from gateway.graph.routers import NoRouteMatched
from gateway.graph.spec import (
    Dependency,
    GraphSpec,
    GraphSpecError,
    Node,
    RouterTimeouts,
    RouterType,
    Step,
)
from gateway.graph.targets import StepTarget, parse_service_url, resolve_service

__all__ = [
    "Condition",
    "Dependency",
    "Graph",
    "GraphSpec",
    "GraphSpecError",
    "NoRouteMatched",
    "Node",
    "RouterTimeouts",
    "RouterType",
    "Step",
    "StepTarget",
    "error_body",
    "load_graph",
    "parse_graph",
    "parse_service_url",
    "resolve_service",
]
