"""Builds each model's hops once at start-up: ``Forwarding(Retrying(Traced(transport)))``.

Retrying sits outside Traced so that every attempt gets its own CLIENT span; Forwarding is
outermost so every attempt sends the same filtered headers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.hops.base import Hop
from gateway.hops.grpc import GrpcHop
from gateway.hops.headers import Forwarding
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.hops.trace import Traced
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.predictor_config import PredictorConfig

logger = logging.getLogger("gateway.hops")


@dataclass(frozen=True)
class HopOptions:
    """What the flags say about every hop beyond KServe's ``--predictor_*`` settings."""

    rest_format: str = "auto"
    forward_headers: frozenset[str] = frozenset()
    forward_authorization: bool = False
    ca_file: str | None = None
    max_connections: int = 100
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    retry_on_timeout: bool = False
    explainer_protocol: str = "v1"
    explainer_retry: RetryPolicy = field(default_factory=RetryPolicy)


def predictor_settings(
    config: PredictorConfig, model_name: str, options: HopOptions
) -> HopSettings:
    assert config.predictor_host
    return HopSettings(
        role="predictor",
        host=config.predictor_host,
        model_name=model_name,
        protocol=config.predictor_protocol,
        use_ssl=config.predictor_use_ssl,
        timeout=config.predictor_request_timeout_seconds,
        retry=RetryPolicy(
            retries=config.predictor_request_retries,
            backoff_initial=options.backoff_initial,
            backoff_max=options.backoff_max,
            retry_on_timeout=options.retry_on_timeout,
            budget=config.predictor_request_timeout_seconds,
        ),
        rest_format=options.rest_format,
        forward_headers=options.forward_headers,
        forward_authorization=options.forward_authorization,
        max_connections=options.max_connections,
        ca_file=options.ca_file,
        health_check=config.predictor_health_check,
    )


def explainer_settings(
    predictor: HopSettings | None, host: str, model_name: str, options: HopOptions
) -> HopSettings:
    base = predictor or HopSettings(role="explainer", host=host, model_name=model_name)
    return replace(
        base,
        role="explainer",
        host=host,
        protocol=options.explainer_protocol,
        retry=options.explainer_retry,
        health_check=False,
    )


def build_hop(settings: HopSettings, *, metrics: Metrics | None, tracer: Any = None) -> Hop:
    transport: Hop = GrpcHop(settings) if settings.protocol == "grpc-v2" else RestHop(settings)
    traced = Traced(transport, settings=settings, metrics=metrics, tracer=tracer)
    retrying = Retrying(traced, settings.retry, metrics=metrics, model_name=settings.model_name)
    return Forwarding(retrying, settings)


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


def connect(
    model: Model,
    server_default: PredictorConfig | None,
    options: HopOptions,
    *,
    metrics: Metrics | None,
    tracer: Any = None,
) -> list[Hop]:
    """Give `model` the predictor and explainer hops it lacks; returns the hops it built
    (hops a user set, a MockHop say, are left alone and are not ours to close)."""
    built: list[Hop] = []
    config = model_predictor_config(model, server_default)
    predictor: HopSettings | None = None
    if config is not None and config.predictor_host and model.predictor_hop is None:
        predictor = predictor_settings(config, model.name, options)
        model.predictor_hop = build_hop(predictor, metrics=metrics, tracer=tracer)
        built.append(model.predictor_hop)
        logger.info("model %s -> predictor %s (%s)", model.name, predictor.host, predictor.protocol)
    if model.explainer_host and model.explainer_hop is None:
        explainer = explainer_settings(predictor, model.explainer_host, model.name, options)
        model.explainer_hop = build_hop(explainer, metrics=metrics, tracer=tracer)
        built.append(model.explainer_hop)
        logger.info("model %s -> explainer %s", model.name, explainer.host)
    return built


async def disconnect(model: Model, built: list[Hop]) -> None:
    """Close the hops `connect` built for `model` and take them off it."""
    for hop in built:
        await hop.aclose()
    if model.predictor_hop in built:
        model.predictor_hop = None
    if model.explainer_hop in built:
        model.explainer_hop = None
