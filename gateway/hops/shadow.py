"""`Shadowed`: a hop that sends a sampled copy of its inference calls to a shadow upstream.

This is how a new model version is checked on live traffic: the shadow gets the same
request, its answer is compared with the primary's for status and thrown away. The copy
runs in a task of its own that the caller never awaits, in a request context of its own
(its timings and deadline are not the client's), so it cannot delay, fail or change the
client's answer; at most `max_in_flight` copies run at once, and a copy past that is
dropped (counted), never queued. What it did is in metrics (``gateway_shadow_*``) and in an
event on the request's span when that is still open.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway import request_context
from gateway.errors import GatewayError, http_status
from gateway.hops.base import Headers, Hop, HopWrapper
from gateway.metrics import LATENCY_BUCKETS, registered_once
from gateway.request_context import RequestContext

__all__ = ["SHADOW_MAX_IN_FLIGHT", "ShadowMetrics", "Shadowed", "shadow_metrics"]

logger = logging.getLogger("gateway.hops")

#: Shadow copies in flight per hop past which more are dropped.
SHADOW_MAX_IN_FLIGHT = 64


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_shadow_requests",
            "Copies of requests sent to a shadow upstream, by outcome (ok, error, dropped)",
            ["model_name", "outcome"],
            registry=registry,
        )
        self.mismatches = Counter(
            "gateway_shadow_mismatches",
            "Shadow answers whose status differed from the primary's",
            ["model_name"],
            registry=registry,
        )
        self.seconds = Histogram(
            "gateway_shadow_seconds",
            "Time of each shadow call",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


def shadow_metrics(registry: CollectorRegistry) -> ShadowMetrics:
    """The shadow metrics of `registry`, registered on it once."""
    return registered_once(ShadowMetrics, registry)


def status_of(exc: BaseException | None) -> int:
    """The HTTP status a client would get for a call that raised `exc` (None: 200)."""
    if exc is None:
        return 200
    return http_status(exc) if isinstance(exc, GatewayError) else 500


class Shadowed(HopWrapper):
    """`inner`, whose inference calls are copied to `shadow` `percent` of the time."""

    def __init__(
        self,
        inner: Hop,
        shadow: Hop,
        *,
        percent: float,
        model_name: str = "",
        metrics: ShadowMetrics | None = None,
        timeout: float = 600.0,
        max_in_flight: int = SHADOW_MAX_IN_FLIGHT,
        random: Callable[[], float] = _random.random,
    ) -> None:
        super().__init__(inner)
        self.shadow = shadow
        self.share = percent / 100
        self.model_name = model_name
        self.metrics = metrics
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.random = random
        self.tasks: set[asyncio.Task[None]] = set()
        self._labels: dict[str, Any] = {}

    async def infer(self, payload: Any, headers: Headers) -> Any:
        if self.share <= 0 or (self.share < 1 and self.random() >= self.share):
            return await self.inner.infer(payload, headers)
        primary: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._copy(payload, dict(headers), primary)
        try:
            answer = await self.inner.infer(payload, headers)
        except BaseException as exc:
            primary.set_result(status_of(exc))
            raise
        primary.set_result(200)
        return answer

    async def aclose(self) -> None:
        tasks, self.tasks = list(self.tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.shadow.aclose()
        await self.inner.aclose()

    def _copy(self, payload: Any, headers: Headers, primary: asyncio.Future[int]) -> None:
        if len(self.tasks) >= self.max_in_flight:
            self._count("dropped")
            return
        served = request_context.current()
        # Its own context: the client's deadline, timings and Server-Timing stay the client's.
        context = RequestContext(
            request_id=served.request_id if served is not None else "",
            protocol=served.protocol if served is not None else "",
            deadline=time.monotonic() + self.timeout,
            tracer=served.tracer if served is not None else None,
        )
        span = trace.get_current_span()
        with request_context.serving(context):
            task = asyncio.ensure_future(self._send(payload, headers, primary, span))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(
        self, payload: Any, headers: Headers, primary: asyncio.Future[int], span: trace.Span
    ) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self.shadow.infer(payload, headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shadow's failure is measured, never passed on
            error = exc
        seconds = time.perf_counter() - started
        status = status_of(error)
        self._count("ok" if error is None else "error")
        if self.metrics is not None:
            self.metrics.seconds.labels(self.model_name).observe(seconds)
        expected = await primary
        attributes: dict[str, str | int | float] = {
            "status": status,
            "primary_status": expected,
            "seconds": seconds,
        }
        if status != expected:
            if self.metrics is not None:
                self.metrics.mismatches.labels(self.model_name).inc()
            logger.info(
                "shadow of %s: status %d, the primary's %d (%s)",
                self.name,
                status,
                expected,
                error or "answered",
            )
        if span.is_recording():
            span.add_event("shadow", attributes)

    def _count(self, outcome: str) -> None:
        if self.metrics is None:
            return
        counter = self._labels.get(outcome)
        if counter is None:
            counter = self._labels[outcome] = self.metrics.requests.labels(self.model_name, outcome)
        counter.inc()
