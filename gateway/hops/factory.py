"""Builds a hop from its settings: ``Shaping(Forwarding(Retrying(Traced(transport))))``.

Shaping is outermost so a dict is shaped once per call, not once per attempt; Forwarding next,
so every attempt sends the same filtered headers; Retrying outside Traced, so that every
attempt gets its own CLIENT span. A hop built here knows its upstream, not who uses it: the
server's wiring (`gateway.wiring`) hands hops to models, a graph could as well.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.hops.auto import AUTO, AutoHop
from gateway.hops.base import Hop
from gateway.hops.grpc import GrpcHop
from gateway.hops.headers import Forwarding
from gateway.hops.pool.metrics import pool_metrics
from gateway.hops.replicas import Pooling, SpanEvents
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings
from gateway.hops.shaping import Shaping
from gateway.hops.trace import Traced
from gateway.metrics import Metrics

__all__ = ["build_hop", "transport"]


def transport(settings: HopSettings, pooling: Pooling | None = None) -> Hop:
    """The bare transport for `settings`' protocol, on a pool of `settings.host`'s replicas."""
    if settings.protocol == AUTO:
        return AutoHop(settings, pooling=pooling)
    if settings.protocol == "grpc-v2":
        return GrpcHop(settings, pooling=pooling)
    return RestHop(settings, pooling=pooling)


def build_hop(
    settings: HopSettings,
    *,
    metrics: Metrics | None,
    tracer: Any = None,
    pooling: Pooling | None = None,
) -> Hop:
    """The hop to the upstream `settings` describe, with retries, tracing and header rules.

    `pooling` has what the process's pools share (the retry budget); the pool's metrics go
    on `metrics`' registry, labelled with the hop's model and role."""
    pooling = pooling or Pooling()
    observer = pooling.observer
    if observer is None and metrics is not None:
        observer = pool_metrics(metrics.registry).observer(settings.model_name, settings.role)
    pooling = replace(pooling, observer=SpanEvents(observer))
    traced = Traced(transport(settings, pooling), settings=settings, metrics=metrics, tracer=tracer)
    retrying = Retrying(traced, settings.retry, metrics=metrics, model_name=settings.model_name)
    return Shaping(Forwarding(retrying, settings), settings.model_name)
