"""The pool metrics, as /metrics shows them: per replica, per pool, gone with the replica."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from gateway.errors import UpstreamStatusError
from gateway.hops.pool import OutlierPolicy, PoolSettings, RetryBudget, StaticResolver
from gateway.hops.pool.metrics import PoolMetrics
from gateway.metrics import Metrics

from .support import Clock, endpoint_pool


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_attempts_latency_ejections_and_refusals_per_replica() -> None:
    registry = CollectorRegistry()
    metrics = PoolMetrics(registry)
    clock, resolver = Clock(), StaticResolver({"svc": ["10.0.0.1"]})
    pool = endpoint_pool(
        "svc:80",
        clock=clock,
        resolver=resolver,
        budget=RetryBudget(percent=0, min_concurrency=0),
        observer=metrics.observer("m", "predictor"),
        settings=PoolSettings(outlier=OutlierPolicy(consecutive_failures=2)),
    )
    await pool.start()
    labels = {"model_name": "m", "hop": "predictor", "replica": "10.0.0.1:80"}
    with pool.call() as call, call.attempt():
        clock.advance(0.003)
    for _ in range(2):
        with pool.call() as call:
            call.attempt().failed(UpstreamStatusError("down", status=503))
            assert not call.may_retry()
    attempts = "gateway_replica_attempts_total"
    assert value(registry, attempts, **labels, outcome="success") == 1
    assert value(registry, attempts, **labels, outcome="gateway_failure") == 2
    assert value(registry, "gateway_replica_seconds_count", **labels) == 3
    assert value(registry, "gateway_replica_seconds_bucket", **labels, le="0.005") == 3
    assert value(registry, "gateway_replica_ejections_total", **labels) == 1
    refusals = {"model_name": "m", "hop": "predictor", "reason": "retry_budget"}
    assert value(registry, "gateway_pool_refusals_total", **refusals) == 2

    resolver.set("svc", ["10.0.0.2"])
    await pool.endpoints.refresh()
    text = generate_latest(registry).decode()
    assert "10.0.0.1:80" not in text  # the replica left: its series went with it
    assert value(registry, "gateway_pool_refusals_total", **refusals) == 2
    await pool.aclose()


def test_they_live_on_the_gateways_registry() -> None:
    metrics = Metrics()
    PoolMetrics(metrics.registry).observer("m", "predictor").refused("concurrency")
    text, _ = metrics.exposition()
    assert (
        b'gateway_pool_refusals_total{hop="predictor",model_name="m",reason="concurrency"} 1.0'
        in text
    )
