"""An inference graph served by one gateway: ``gateway serve --graph FILE --service NAME=URL``.

From the flags: `load` reads the graph (a `GraphSpecError` says what is wrong), `server_flags`
maps its ``routerTimeouts`` onto the REST server's flags, and `GraphUpstreams.from_spec` gives
every service a `HopSettings` (the server's retry, timeout, tracing and header settings, the
service's own address, protocol and model). At start-up each server process `build`s its hops
and the `Graph` over them, which the graph's model takes as its predictor hop.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from gateway import request_context
from gateway.graph import Graph, GraphSpec, GraphSpecError, StepTarget, load_graph
from gateway.hops.base import Headers, Hop, HopWrapper
from gateway.hops.factory import build_hop
from gateway.hops.replicas import Pooling
from gateway.hops.settings import HopSettings
from gateway.infer_request import InferRequest
from gateway.metrics import Metrics
from gateway.request_context import RequestContext

__all__ = ["GraphUpstreams", "load", "server_flags", "services", "step_settings"]


def services(items: Iterable[str]) -> dict[str, str]:
    """``NAME=URL`` flags as NAME -> URL; ValueError for one that is not."""
    found: dict[str, str] = {}
    for item in items:
        name, equals, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not equals or not name or not url:
            raise ValueError(f"--service must be NAME=URL, not {item!r}")
        if name in found and found[name] != url:
            raise ValueError(f"--service {name} is given twice: {found[name]} and {url}")
        found[name] = url
    return found


def load(args: argparse.Namespace) -> GraphSpec:
    """The graph ``--graph`` names, its services resolved by ``--service``; a bare spec (no
    ``metadata.name``) is named by ``--model_name``."""
    if getattr(args, "predictor_host", None):
        raise ValueError("--graph and --predictor_host: a graph's steps name their services")
    return load_graph(args.graph, services=services(args.service), default_name=args.model_name)


def server_flags(args: argparse.Namespace, spec: GraphSpec) -> argparse.Namespace:
    """`args` with the graph's ``routerTimeouts`` for the REST server, as far as aiohttp has
    them: serverRead bounds receiving a body, serverIdle an idle keep-alive connection.
    (serverWrite becomes the deadline of the whole graph, serviceClient the cap of each step:
    see `GraphUpstreams`.)"""
    timeouts = spec.router_timeouts
    changed = vars(args).copy()
    if timeouts.server_read is not None:
        changed["request_body_timeout"] = timeouts.server_read
    if timeouts.server_idle is not None:
        changed["timeout_keep_alive"] = timeouts.server_idle
    return argparse.Namespace(**changed)


def step_settings(
    base: HopSettings, role: str, target: StepTarget, cap: float | None
) -> HopSettings:
    """The hop to one service: `base` (the server's flags) with the service's address,
    protocol and model, named `role`; each call within `cap` seconds (serviceClient)."""
    timeout = base.timeout if cap is None else min(base.timeout, cap)
    return replace(
        base,
        role=role,
        host=target.host,
        model_name=target.model_name,
        protocol=target.protocol,
        use_ssl=target.use_ssl,
        timeout=timeout,
        retry=replace(base.retry, budget=timeout),
    )


@dataclass(frozen=True)
class GraphUpstreams:
    """A graph and the settings of the hop to each of its services (by `Step.service`)."""

    spec: GraphSpec
    hops: Mapping[str, HopSettings]
    # Seconds the whole graph may take for a request that brings no deadline of its own.
    deadline: float

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_spec(cls, spec: GraphSpec, base: HopSettings) -> GraphUpstreams:
        """Every service of `spec` reached as `base` says (retries, timeout, headers, TLS
        roots); serverWrite, else `base`'s timeout, bounds the whole graph."""
        cap = spec.router_timeouts.service_client
        roles = _roles(spec)
        hops = {}
        for service, target in spec.targets().items():
            if target is None:  # load() resolves every service name or refuses the graph
                raise GraphSpecError(f"graph {spec.name!r}: no URL for service {service!r}")
            hops[service] = step_settings(base, roles[service], target, cap)
        deadline = spec.router_timeouts.server_write or base.timeout
        return cls(spec, MappingProxyType(hops), deadline)

    def build(
        self, *, metrics: Metrics | None, tracer: Any = None, pooling: Pooling | None = None
    ) -> Hop:
        """The graph over a new hop per service (the caller closes it with `aclose`); each
        service's pool shares what `pooling` holds (the process's retry budget)."""
        targets = self.spec.targets()
        hops = {
            service: _Step(
                build_hop(settings, metrics=metrics, tracer=tracer, pooling=pooling),
                targets[service],
            )
            for service, settings in self.hops.items()
        }
        return _Deadline(Graph(self.spec, hops, metrics=metrics), self.deadline)


def _roles(spec: GraphSpec) -> dict[str, str]:
    """Each service's hop name (spans, metrics, Server-Timing): its ``serviceName``; for a
    ``serviceUrl``, the model it names (with its address if another hop has that name)."""
    roles: dict[str, str] = {}
    taken: set[str] = set()
    services_first = sorted(spec.targets().items(), key=lambda item: "://" in item[0])
    for service, target in services_first:
        role = service
        if "://" in service and target is not None:
            role = target.model_name
            if role in taken:
                role = f"{target.model_name}@{target.host}"
        while role in taken:
            role += "_"
        roles[service] = role
        taken.add(role)
    return roles


class _Step(HopWrapper):
    """A service's hop as a step calls it: the model version its URL names (not the one the
    graph was called with) and readiness of that model, not of the whole server."""

    def __init__(self, inner: Hop, target: StepTarget | None) -> None:
        super().__init__(inner)
        self.model_name = target.model_name if target is not None else None
        self.model_version = target.model_version if target is not None else None
        self.v1 = target is None or target.protocol == "v1"

    async def infer(self, payload: Any, headers: Headers) -> Any:
        if isinstance(payload, InferRequest) and payload.model_version != self.model_version:
            payload = copy.copy(payload)
            payload.model_version = self.model_version
        elif isinstance(payload, dict) and not self.v1:
            payload = _v1_answer_as_request(payload)
        return await self.inner.infer(payload, headers)

    async def ready(self, model_name: str | None = None) -> bool:
        return await self.inner.ready(model_name or self.model_name)


def _v1_answer_as_request(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 step's answer (``predictions``) passed on as ``$response`` to a v2 or gRPC step:
    its predictions are that step's ``instances``, value for value. A v1 step gets the answer
    as it is, as KServe's router passes it."""
    if "predictions" not in payload or "instances" in payload or "inputs" in payload:
        return payload
    request = {key: value for key, value in payload.items() if key != "predictions"}
    request["instances"] = payload["predictions"]
    return request


class _Deadline(HopWrapper):
    """The graph within `seconds` of its call (KServe's serverWrite), or sooner when the
    request's own deadline says so."""

    def __init__(self, graph: Graph, seconds: float) -> None:
        super().__init__(graph)
        self.graph = graph
        self.seconds = seconds

    async def infer(self, payload: Any, headers: Headers) -> Any:
        deadline = time.monotonic() + self.seconds
        context = request_context.current()
        if context is None:
            context = RequestContext(request_id="", protocol="graph", deadline=deadline)
        elif context.deadline is None or context.deadline > deadline:
            # The request's timings stay shared: only its deadline is new.
            context = dataclasses.replace(context, deadline=deadline)
        else:
            return await self.inner.infer(payload, headers)
        with request_context.serving(context):
            return await self.inner.infer(payload, headers)
