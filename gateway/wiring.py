"""Which hops the server's models get: settings from the flags, hops built once at start-up
and handed to each model, closed at stop.

The hops themselves (`gateway.hops`) know no model: this is where the two meet, beside the
server that owns the models.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.hops.base import Hop
from gateway.hops.factory import build_hop
from gateway.hops.pool import (
    HealthCheckPolicy,
    OutlierPolicy,
    PoolSettings,
    Resolver,
    RetryBudget,
)
from gateway.hops.replicas import Pooling
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.hops.shadow import Shadowed, shadow_metrics
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.predictor_config import PredictorConfig

if TYPE_CHECKING:  # the graph engine loads only when a graph is served
    from gateway.graph import GraphSpec
    from gateway.graph_wiring import GraphUpstreams

__all__ = ["Upstreams", "connect", "disconnect", "model_predictor_config", "predictor_settings"]

logger = logging.getLogger("gateway.hops")

# Learnings started as hops connect: held here until done (the loop keeps only weak refs).
_learning: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True)
class Upstreams:
    """Each hop's settings as the flags give them. A host the flags do not name is empty: a
    model may name its own predictor (KServe's `PredictorConfig`, or ``predictor_host``).

    `budget` is the process's one `RetryBudget`, shared by every pool (a worker process gets
    its own copy when it forks); `resolver` replaces the system's in tests."""

    predictor: HopSettings
    explainer: HopSettings
    # ``--graph``: the inference graph the model of that name runs as its predictor.
    graph: GraphUpstreams | None = None
    # A pool that gets a copy of `shadow_percent` of the predictor's requests (host "": none).
    shadow: HopSettings | None = None
    shadow_percent: float = 100.0
    budget: RetryBudget = field(default_factory=RetryBudget)
    resolver: Resolver | None = None

    @property
    def pooling(self) -> Pooling:
        return Pooling(budget=self.budget, resolver=self.resolver)

    @classmethod
    def from_flags(cls, args: argparse.Namespace, graph: GraphSpec | None = None) -> Upstreams:
        timeout = args.predictor_request_timeout_seconds
        headers = (h.strip().lower() for h in args.forward_headers.split(","))
        health = None
        if args.health_check_interval > 0:
            health = HealthCheckPolicy(interval=args.health_check_interval)
        pool = PoolSettings(
            balancer=args.balancer,
            max_in_flight=args.pool_max_in_flight,
            outlier=OutlierPolicy(
                consecutive_failures=args.outlier_consecutive_failures,
                base_ejection_time=args.outlier_base_ejection_seconds,
                max_ejection_time=max(300.0, args.outlier_base_ejection_seconds),
                max_ejection_percent=args.outlier_max_ejection_percent,
            ),
            health_check=health,
            refresh_interval=args.dns_refresh_seconds,
        )
        predictor = HopSettings(
            role="predictor",
            host=args.predictor_host or "",
            protocol=args.protocol or args.predictor_protocol,
            use_ssl=args.predictor_use_ssl,
            timeout=timeout,
            retry=RetryPolicy(
                retries=args.predictor_request_retries,
                backoff_initial=args.retry_backoff_initial,
                backoff_max=args.retry_backoff_max,
                retry_on_timeout=args.retry_on_timeout,
                budget=timeout,
            ),
            rest_format=args.predictor_rest_format,
            validate_inputs=args.validate_inputs,
            forward_headers=frozenset(h for h in headers if h),
            forward_authorization=args.forward_authorization,
            max_connections=args.predictor_max_connections,
            max_response_bytes=args.max_upstream_response_bytes,
            ca_file=args.predictor_ca_file,
            pool=pool,
        )
        # The explainer is reached as the predictor is (TLS, timeout, headers, backoff),
        # with a protocol and a number of retries of its own.
        retries = args.explainer_request_retries
        if retries is None:
            retries = predictor.retry.retries
        explainer = replace(
            predictor,
            role="explainer",
            host=args.explainer_host or "",
            protocol=args.explainer_protocol,
            retry=replace(predictor.retry, retries=retries),
        )
        shadow = None
        if args.predictor_shadow_host:
            # Never retried: a copy that failed once has told what it had to.
            shadow = replace(
                predictor,
                role="shadow",
                host=args.predictor_shadow_host,
                retry=replace(predictor.retry, retries=0),
            )
        budget = RetryBudget(args.retry_budget_percent, args.min_retry_concurrency)
        # Each step of a graph is reached as the predictor would be (its flags' retries,
        # timeout, headers), at the address its service URL gives.
        steps = None
        if graph is not None:
            from gateway.graph_wiring import GraphUpstreams

            steps = GraphUpstreams.from_spec(graph, predictor)
        return cls(
            predictor,
            explainer,
            graph=steps,
            shadow=shadow,
            shadow_percent=args.shadow_percent,
            budget=budget,
        )


def model_predictor_config(
    model: Model, server_default: PredictorConfig | None
) -> PredictorConfig | None:
    """The predictor a model forwards to: a KServe-style ``predictor_host`` / ``protocol`` set
    on the model wins, then the model's `predictor_config`, then the server's."""
    base = model.predictor_config or server_default
    host = getattr(model, "predictor_host", None)
    if not host:
        return base
    protocol = getattr(model, "protocol", None) or (base.predictor_protocol if base else "v1")
    return replace(
        base or PredictorConfig(predictor_host=host),
        predictor_host=host,
        predictor_protocol=str(protocol),
    )


def predictor_settings(base: HopSettings, config: PredictorConfig, model_name: str) -> HopSettings:
    """`base` as KServe's `PredictorConfig` says: the one place the two types meet."""
    assert config.predictor_host
    timeout = config.predictor_request_timeout_seconds
    return replace(
        base,
        host=config.predictor_host,
        model_name=model_name,
        protocol=config.predictor_protocol,
        use_ssl=config.predictor_use_ssl,
        timeout=timeout,
        retry=replace(base.retry, retries=config.predictor_request_retries, budget=timeout),
    )


def connect(
    model: Model,
    upstreams: Upstreams,
    server_config: PredictorConfig | None,
    *,
    metrics: Metrics | None,
    tracer: Any = None,
) -> list[Hop]:
    """Give `model` the predictor and explainer hops it lacks; returns the hops it built
    (hops a user set, a MockHop say, are left alone and are not ours to close)."""
    built: list[Hop] = []
    pooling = upstreams.pooling
    graph = upstreams.graph
    if graph is not None and model.name == graph.name and model.predictor_hop is None:
        model.predictor_hop = graph.build(metrics=metrics, tracer=tracer, pooling=pooling)
        # The graph's model is only as ready as every service the graph calls.
        model.predictor_config = PredictorConfig(None, predictor_health_check=True)
        built.append(model.predictor_hop)
        logger.info("model %s -> graph of %d services", model.name, len(graph.hops))
    config = model_predictor_config(model, server_config)
    if config is not None and config.predictor_host and model.predictor_hop is None:
        predictor = predictor_settings(upstreams.predictor, config, model.name)
        hop = build_hop(predictor, metrics=metrics, tracer=tracer, pooling=pooling)
        logger.info("model %s -> predictor %s (%s)", model.name, predictor.host, predictor.protocol)
        if upstreams.shadow is not None and upstreams.shadow.host:
            hop = _shadowed(
                hop, replace(upstreams.shadow, model_name=model.name), upstreams, metrics, tracer
            )
        model.predictor_hop = hop
        built.append(hop)
        _learn_now(hop)
    elif model.predictor_hop is None and type(model).predict is Model.predict:
        # Served, as KServe serves it (ready, and 501 to inference): it may only explain.
        logger.warning(
            "model %s has no predictor (--predictor_host HOST:PORT) and no predict() of its "
            "own: its inference requests will answer 501",
            model.name,
        )
    if model.explainer_host and model.explainer_hop is None:
        explainer = replace(upstreams.explainer, host=model.explainer_host, model_name=model.name)
        model.explainer_hop = build_hop(explainer, metrics=metrics, tracer=tracer, pooling=pooling)
        built.append(model.explainer_hop)
        logger.info("model %s -> explainer %s", model.name, explainer.host)
    return built


def _shadowed(
    primary: Hop, shadow: HopSettings, upstreams: Upstreams, metrics: Metrics | None, tracer: Any
) -> Hop:
    """`primary` with a copy of `upstreams.shadow_percent` of its requests sent to `shadow`
    (a pool outside the retry budget: its calls are never retried)."""
    pooling = replace(upstreams.pooling, budget=None)
    copy = build_hop(shadow, metrics=metrics, tracer=tracer, pooling=pooling)
    logger.info(
        "model %s -> shadow %s (%g%% of requests)",
        shadow.model_name,
        shadow.host,
        upstreams.shadow_percent,
    )
    return Shadowed(
        primary,
        copy,
        percent=upstreams.shadow_percent,
        model_name=shadow.model_name,
        metrics=None if metrics is None else shadow_metrics(metrics.registry),
        timeout=shadow.timeout,
    )


def _learn_now(hop: Hop) -> None:
    """Ask the upstream what it speaks and takes as the hop connects, not at the first
    request (bounded; a request that comes first waits for it, within its deadline)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # connected outside a loop: learned at the first request
        return
    task = loop.create_task(hop.facts())
    _learning.add(task)
    task.add_done_callback(_learning.discard)


async def disconnect(model: Model, built: list[Hop]) -> None:
    """Close the hops `connect` built for `model` and take them off it."""
    for hop in built:
        await hop.aclose()
    if model.predictor_hop in built:
        model.predictor_hop = None
    if model.explainer_hop in built:
        model.explainer_hop = None
