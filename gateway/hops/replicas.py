"""What the transports share about the replicas behind a hop: the pool built from the hop's
settings, the client each replica gets, and naming the replica on the attempt's span.

One `Pool` per upstream, whatever the protocol: a replica's `ReplicaClient` has its REST base
URL and ``Host`` (all replicas share the hop's one aiohttp session) and, opened when first
used, its own gRPC channel. A hop that learns the protocol (`gateway.hops.auto`) hands the
same pool to the REST and gRPC transports it holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from gateway.hops.facts import Learner, Probe
from gateway.hops.pool import (
    Endpoint,
    Outcome,
    Pool,
    PoolObserver,
    PoolTarget,
    Replica,
    Resolver,
    RetryBudget,
    parse_target,
)
from gateway.hops.settings import HopSettings

__all__ = [
    "Pooling",
    "ReplicaClient",
    "ReplicaNamed",
    "SpanEvents",
    "name_replica",
    "open_pool",
    "pool_ready",
    "pool_target",
    "upstream_of",
]

logger = logging.getLogger("gateway.hops")

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Pooling:
    """What the pools of one process share, beside each hop's settings: the retry budget
    (None: retries are not capped), the observer metrics hang on, a resolver for tests."""

    budget: RetryBudget | None = None
    observer: PoolObserver | None = None
    resolver: Resolver | None = None


class ReplicaClient:
    """One replica as a transport reaches it: a REST base URL and ``Host``, the name TLS
    checks, and a gRPC channel (opened on first use, replaced when it failed to connect)."""

    def __init__(self, endpoint: Endpoint, scheme: str) -> None:
        self.endpoint = endpoint
        self.scheme = scheme
        self.base_url = f"{scheme}://{endpoint.hostport}"
        # As a client given the name would send it: no port when it is the scheme's.
        default = _DEFAULT_PORTS[scheme] == endpoint.port
        self.host_header = endpoint.host if default else endpoint.authority
        if default and ":" in endpoint.host:
            self.host_header = f"[{endpoint.host}]"
        # TLS checks the certificate against the name, not the address connected to.
        self.server_hostname: str | None = endpoint.host if scheme == "https" else None
        self.channel: grpc.aio.Channel | None = None
        # Method callables of `channel`, made once each.
        self.rpcs: dict[str, Any] = {}
        self.renewed = -math.inf
        # Calls in flight per channel: a replaced channel closes when its last call ends.
        self.calls: dict[grpc.aio.Channel, int] = {}
        # Replaced channels, closing.
        self.closing: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        channel, self.channel = self.channel, None
        self.rpcs.clear()
        for task in list(self.closing):
            task.cancel()
        await asyncio.gather(*self.closing, return_exceptions=True)
        if channel is not None:
            await channel.close(None)


def pool_target(settings: HopSettings) -> PoolTarget:
    """The hop's ``host`` as pool entries (port 443 with TLS, else 80, when none is given)."""
    secure = settings.use_ssl or settings.host.lower().startswith("https://")
    return parse_target(settings.host, default_port=443 if secure else 80)


def upstream_of(
    settings: HopSettings,
    pool: Pool[ReplicaClient] | None,
    pooling: Pooling | None,
    learner: Learner | None,
    probe: Callable[[Replica[ReplicaClient]], Awaitable[bool]],
    discover: Probe,
) -> tuple[Pool[ReplicaClient], Learner]:
    """A transport hop's replicas and what it learns of them: those given (an ``auto`` hop
    shares its own with the hop it picks), else new ones."""
    pool = pool or open_pool(settings, pooling, probe)
    learner = learner or Learner(
        discover, settings.role, str(pool.endpoints.target), keep_inputs=settings.validate_inputs
    )
    return pool, learner


def open_pool(
    settings: HopSettings,
    pooling: Pooling | None,
    probe: Callable[[Replica[ReplicaClient]], Awaitable[bool]],
) -> Pool[ReplicaClient]:
    """The pool of `settings`' upstream (started by its first use)."""
    pooling = pooling or Pooling()
    target = pool_target(settings)
    scheme = target.scheme or ("https" if settings.use_ssl else "http")
    return Pool(
        target,
        open_client=lambda endpoint: ReplicaClient(endpoint, scheme),
        close_client=ReplicaClient.aclose,
        settings=settings.pool,
        budget=pooling.budget,
        probe=probe,
        observer=pooling.observer,
        resolver=pooling.resolver,
        role=settings.role,
    )


async def pool_ready(
    pool: Pool[ReplicaClient],
    probe: Callable[[Replica[ReplicaClient], str | None], Awaitable[bool]],
    model_name: str | None,
) -> bool:
    """A hop's readiness: one replica of `pool` says it (or its model `model_name`) is ready
    to `probe`; with active health checks, one replica is healthy. False on any error."""
    try:
        await pool.start()
    except Exception as exc:  # a probe reports, it does not raise
        logger.debug("%s: readiness probe failed: %s", pool.role, exc)
        return False
    if model_name is None and pool.health is not None:
        return pool.healthy()
    return await pool.ready(lambda replica: probe(replica, model_name))


# Where the attempt being traced (`gateway.hops.trace`) learns the replica it went to: its
# span takes all its attributes at once, when the attempt ends.
_attempt: ContextVar[ReplicaNamed | None] = ContextVar("gateway_attempt_replica", default=None)


def name_replica(endpoint: Endpoint) -> None:
    """Name the replica an attempt went to, for the attempt's CLIENT span (none: untraced)."""
    named = _attempt.get()
    if named is not None:
        named.endpoint = endpoint


class ReplicaNamed:
    """The replica the attempt inside the block went to (`name_replica`), if any."""

    __slots__ = ("_token", "endpoint")

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None

    def __enter__(self) -> ReplicaNamed:
        self._token = _attempt.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _attempt.reset(self._token)

    def attributes(self) -> dict[str, AttributeValue]:
        """The replica as span attributes (none when no replica was named)."""
        endpoint = self.endpoint
        if endpoint is None:
            return {}
        return {
            "server.address": endpoint.host,
            "server.port": endpoint.port,
            "network.peer.address": endpoint.address,
            "network.peer.port": endpoint.port,
        }


class SpanEvents(PoolObserver):
    """Tells `inner` everything, and the span of the request being served (when there is
    one) of what happened to it: an ejection its attempt caused, a refusal."""

    def __init__(self, inner: PoolObserver | None) -> None:
        self.inner = inner or PoolObserver()

    def attempt_finished(self, replica: Replica[Any], outcome: Outcome, seconds: float) -> None:
        self.inner.attempt_finished(replica, outcome, seconds)

    def ejected(self, replica: Replica[Any], seconds: float) -> None:
        self.inner.ejected(replica, seconds)
        _event("replica_ejected", {"replica": replica.endpoint.hostport, "seconds": seconds})

    def readmitted(self, replica: Replica[Any]) -> None:
        self.inner.readmitted(replica)

    def health_changed(self, replica: Replica[Any], healthy: bool) -> None:
        self.inner.health_changed(replica, healthy)

    def refused(self, reason: str) -> None:
        self.inner.refused(reason)
        _event("pool_refused", {"reason": reason})

    def replica_added(self, replica: Replica[Any]) -> None:
        self.inner.replica_added(replica)

    def replica_removed(self, replica: Replica[Any]) -> None:
        self.inner.replica_removed(replica)


def _event(name: str, attributes: dict[str, str | float]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)
