"""Builds a hop from its settings: ``Shaping(Forwarding(Retrying(Traced(transport))))``.

Shaping is outermost so a dict is shaped once per call, not once per attempt; Forwarding next,
so every attempt sends the same filtered headers; Retrying outside Traced, so that every
attempt gets its own CLIENT span. A hop built here knows its upstream, not who uses it: the
server's wiring (`gateway.wiring`) hands hops to models, a graph could as well.
"""

from __future__ import annotations

from typing import Any

from gateway.hops.auto import AUTO, AutoHop
from gateway.hops.base import Hop
from gateway.hops.grpc import GrpcHop
from gateway.hops.headers import Forwarding
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings
from gateway.hops.shaping import Shaping
from gateway.hops.trace import Traced
from gateway.metrics import Metrics

__all__ = ["build_hop", "transport"]


def transport(settings: HopSettings) -> Hop:
    """The bare transport for `settings`' protocol."""
    if settings.protocol == AUTO:
        return AutoHop(settings)
    return GrpcHop(settings) if settings.protocol == "grpc-v2" else RestHop(settings)


def build_hop(settings: HopSettings, *, metrics: Metrics | None, tracer: Any = None) -> Hop:
    """The hop to the upstream `settings` describe, with retries, tracing and header rules."""
    traced = Traced(transport(settings), settings=settings, metrics=metrics, tracer=tracer)
    retrying = Retrying(traced, settings.retry, metrics=metrics, model_name=settings.model_name)
    return Shaping(Forwarding(retrying, settings), settings.model_name)
