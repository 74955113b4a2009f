"""Inference graphs: KServe's ``InferenceGraph`` resource, run over our hops.

Public API::

    load_graph(path, services=None, name=None) -> GraphSpec     YAML or JSON file
    parse_graph(document, services=None, name=None) -> GraphSpec
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

Wiring that is not here (it belongs to the server, after the hop room is reorganised):

1. ``gateway serve --graph FILE [--service NAME=URL ...]``: ``load_graph(FILE, services=...)``
   (a `GraphSpecError` is a start-up error: print it, exit 2), then one hop per
   ``spec.targets()`` entry built from its `StepTarget` (protocol, host, model name, TLS; the
   hop's role named after the service) with the server's retry, timeout, tracing and header
   settings, and ``Graph(spec, hops, metrics=server_metrics)``.
2. Serve it: a model named ``spec.name`` whose predictor hop is the graph (REST v1, REST v2
   and gRPC under the graph's name), and ``POST /`` answering the root node's dict as JSON;
   a failure on ``/`` answers ``error_body(exc)`` with ``http_status(exc)``, as KServe's router
   passes a failed step's body on.
3. ``spec.router_timeouts``: serverRead / serverWrite / serverIdle to the REST server's
   timeouts (serverWrite also as the deadline of a request that brings none).
4. Readiness: the graph's model is ready when ``graph.ready()`` (every service ready), like
   ``--predictor_health_check``.
5. Demo, docker-compose, ``examples/graph/`` and the benchmark of issue 11.
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
