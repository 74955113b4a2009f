"""Upstream pools: many replicas behind one hop, balanced, ejected when sick, retried within
a budget. Design notes, Envoy's rules and our departures, and the gRPC decision (one
``grpc.aio`` channel per replica under this balancer, not grpcio's ``dns:///`` +
``round_robin``): ``docs/pools.md``.

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

How a hop uses a pool::

    budget = RetryBudget(percent=20, min_concurrency=3)          # once per process
    pool = Pool(parse_target(host, default_port=80), open_client=..., close_client=...,
                settings=PoolSettings(...), budget=budget, probe=...,
                observer=pool_metrics.observer(model_name, "predictor"), role="predictor")
    await pool.start()                                           # server start-up
    with pool.call() as call:                                    # one request
        # tenacity loop, ``stop = ... | stop_when_retry_refused(call)`` (last)
        with call.attempt() as lease:                            # pick: untried, healthy
            send to lease.endpoint with lease.client              # raise our errors
    await pool.aclose()                                          # server stop

Wiring left for the next step (after issue 10's restructuring lands):

- Flags: ``--predictor_host`` / ``--explainer_host`` / graph step URLs through
  `parse_target` (``default_port`` 443 with SSL, else 80; a scheme in the target decides
  SSL; `PoolTargetError` -> an argparse error prefixed with the flag). New flags into
  `PoolSettings` (balancer, ``max_in_flight``, the `OutlierPolicy` numbers, an optional
  `HealthCheckPolicy`, DNS refresh interval) as a field of each hop's settings type, and
  ``--retry_budget_percent`` / ``--min_retry_concurrency`` into one `RetryBudget` per
  process, shared by every pool (shadow pools excepted: ``budget=None``).
- Transports: each holds a `Pool`, started with the server (``await pool.start()``) and
  closed by ``aclose``; each attempt runs in ``with call.attempt() as lease``. REST: one
  aiohttp session for all replicas; the client is the base URL
  ``http(s)://{lease.endpoint.hostport}``; ``Host: {endpoint.authority}``, and
  ``server_hostname=endpoint.host`` for TLS so the certificate is checked against the name,
  not the IP. gRPC: the client is a channel to ``endpoint.hostport`` with the current
  ``CHANNEL_OPTIONS`` plus ``grpc.default_authority`` = ``endpoint.authority`` (and
  ``grpc.ssl_target_name_override`` = ``endpoint.host`` with TLS); the per-method callables
  cached per channel; ``close_client`` = ``channel.close(None)``.
- Retry: `Retrying` opens ``with pool.call() as call`` per logical call, passes ``call``
  down with the attempt, and appends ``stop_when_retry_refused(call)`` last to its ``stop``
  (a per-call ``copy(stop=...)``); ``is_retryable`` returns False for `PoolSaturated`.
  A refused retry: a ``retry_refused`` span event and log line (the refusal is counted).
- Readiness: ``hop.ready()`` -> ``pool.ready()`` when health checks run, else
  ``pool.ready(check)`` with the transport's probe at one replica (REST ``/v2/health/ready``
  or ``/v1/models/{name}``, gRPC ``ServerReady``; per model for ``ready(model_name)``): the
  gateway is ready with ``--enable_predictor_health_check`` when one replica is.
- Spans: the attempt's CLIENT span names its replica: ``server.address`` = endpoint.host,
  ``server.port``, ``network.peer.address`` = endpoint.address, ``network.peer.port``
  (set by the transport on the current span after ``call.attempt()``); the ``/traces``
  waterfall shows ``network.peer.address`` on hop rows; `PoolObserver` callbacks become span
  events where a request is current (ejection, budget refusal).
- Metrics: ``PoolMetrics(metrics.registry)`` once per server, ``.observer(model, role)``
  per pool (on ``gateway.metrics.LATENCY_BUCKETS``).
- Shadow (not built): ``--predictor_shadow_host`` (a `Pool`, no retries, no budget) and
  ``--shadow_percent``: a hop wrapper that sends a sampled copy in a task it never awaits,
  with a cap on shadow requests in flight, compares the status, discards the answer, and
  counts shadow requests, errors, latency and status mismatches.
"""

from gateway.hops.pool.balancer import BALANCERS, LeastRequest, RoundRobin
from gateway.hops.pool.budget import RetryBudget
from gateway.hops.pool.call import Lease, PoolCall, calling, leased, stop_when_retry_refused
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
    "calling",
    "leased",
    "outcome_of",
    "parse_target",
    "stop_when_retry_refused",
]
