"""Upstream pools: many replicas behind one hop, balanced, ejected when sick, retried within
a budget.

    target.py     ``host:port,host:port`` or a DNS name -> `PoolTarget`; `Endpoint`
    resolve.py    names -> endpoints, re-resolved every few seconds (`EndpointSet`);
                  `SystemResolver`, and `StaticResolver` for tests
    replica.py    `Replica`: an endpoint, its client, its counts and health
    balancer.py   least request of two random choices (default), or round robin
    outlier.py    passive ejection after consecutive gateway / connect failures (Envoy's)
    health.py     active health checks with healthy / unhealthy thresholds (optional)
    budget.py     `RetryBudget`: retries in flight capped at a share of requests, per process
    outcome.py    what an attempt's error says about the replica; `PoolSaturated`, `NoReplica`
    call.py       `PoolCall` (one request) and `Lease` (one attempt on one replica)
    pool.py       `Pool` and `PoolSettings`, tying the above together
    observer.py   `PoolObserver`: the callbacks metrics (and spans) hang on
    metrics.py    `PoolMetrics`: the Prometheus series, on the gateway's registry

How a hop uses a pool (see `gateway.hops.pool.call`)::

    budget = RetryBudget(percent=20, min_concurrency=3)          # once per process
    pool = Pool(parse_target("a:8080,b:8080", default_port=80),
                open_client=..., close_client=..., settings=PoolSettings(...),
                budget=budget, probe=..., observer=metrics.observer(model, "predictor"),
                role="predictor")
    await pool.start()                                           # server start-up
    with pool.call() as call:                                    # one request
        for each attempt (the retry loop; ``stop_when_retry_refused(call)`` last in ``stop``):
            with call.attempt() as lease:                        # pick (untried first)
                send to lease.endpoint / lease.client             # raise our errors
    await pool.aclose()                                          # server stop

The gRPC hop keeps one ``grpc.aio`` channel per replica under this balancer rather than
grpcio's own ``dns:///`` + ``round_robin``; ``docs/pools.md`` gives the experiments behind
that choice.
"""

from gateway.hops.pool.balancer import BALANCERS, LeastRequest, RoundRobin
from gateway.hops.pool.budget import RetryBudget
from gateway.hops.pool.call import Lease, PoolCall, stop_when_retry_refused
from gateway.hops.pool.health import HealthCheckPolicy
from gateway.hops.pool.observer import REFUSALS, PoolObserver
from gateway.hops.pool.outcome import NoReplica, Outcome, PoolSaturated, outcome_of
from gateway.hops.pool.outlier import OutlierPolicy
from gateway.hops.pool.pool import Pool, PoolSettings
from gateway.hops.pool.replica import Replica
from gateway.hops.pool.resolve import Resolver, StaticResolver, SystemResolver
from gateway.hops.pool.target import Endpoint, HostPort, PoolTarget, PoolTargetError, parse_target

__all__ = [
    "BALANCERS",
    "REFUSALS",
    "Endpoint",
    "HealthCheckPolicy",
    "HostPort",
    "Lease",
    "LeastRequest",
    "NoReplica",
    "Outcome",
    "OutlierPolicy",
    "Pool",
    "PoolCall",
    "PoolObserver",
    "PoolSaturated",
    "PoolSettings",
    "PoolTarget",
    "PoolTargetError",
    "Replica",
    "Resolver",
    "RetryBudget",
    "RoundRobin",
    "StaticResolver",
    "SystemResolver",
    "outcome_of",
    "parse_target",
    "stop_when_retry_refused",
]
