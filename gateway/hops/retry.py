"""`Retrying`: repeat a hop's call where repeating cannot do harm, inside the request's deadline.

The policy is tenacity strategies composed once per hop::

    stop  = stop_after_attempt(retries + 1) | stop_before_deadline() | stop_before_delay(budget)
    wait  = wait_at_least_retry_after(wait_full_jitter(wait_exponential(initial, max)))
    retry = retry_if_exception(is_retryable)

tenacity computes the wait before asking the stop, so `stop_before_deadline` sees the wait
that Retry-After may have lengthened, and gives up rather than sleep past the deadline.
A budget (the hop's timeout) is the deadline of a call that has none sooner: every attempt's
timeout is cut to what is left of it, so attempts and waits together fit in it.

Each attempt goes to the inner hop's `Hop.attempt` with its number, so the hop inside (the
tracing wrapper) can tell the attempts of one call apart.

When the hop has a pool of replicas (`Hop.upstream_pool`), each call is one pool call, made
current for the transport to lease its attempts from (each on a replica not tried yet), and
``stop_when_retry_refused`` goes last in the stop: a retry the process's retry budget (or a
full pool) refuses ends the call at once with the upstream's error. A full pool's own refusal
(`PoolSaturated`) is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential

from gateway import request_context
from gateway.errors import (
    GatewayError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.hops.base import Headers, Hop, HopWrapper, Metadata
from gateway.hops.pool import PoolCall, PoolSaturated, calling, stop_when_retry_refused
from gateway.hops.settings import RetryPolicy
from gateway.metrics import Metrics
from gateway.request_context import RequestContext

__all__ = [
    "Retrying",
    "is_retryable",
    "retry_reason",
    "stop_before_deadline",
    "wait_at_least_retry_after",
    "wait_full_jitter",
]

logger = logging.getLogger("gateway.hops")

# Statuses a proxy or server gives when the request did not get through to a model.
_RETRY_STATUSES = frozenset({502, 503, 504})


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether a call that failed with `exc` can be repeated without harm."""
    if isinstance(exc, PoolSaturated):
        # Repeating at once only adds to the load that filled the pool.
        return False
    if isinstance(exc, UpstreamStatusError):
        # The upstream understood and refused the request: repeating it gets the same answer.
        if 400 <= exc.status < 500:
            return False
        return exc.status in _RETRY_STATUSES or exc.code == grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, UpstreamTimeout):
        # The upstream may still be running it; a second run must be asked for.
        return policy.retry_on_timeout
    # Nothing was delivered. Protocol errors and our own errors are not the network's fault.
    return isinstance(exc, UpstreamUnavailable)


def retry_reason(exc: BaseException | None) -> str:
    """A short, low-cardinality label for why an attempt failed: a status or a class name."""
    if isinstance(exc, UpstreamStatusError):
        return str(exc.status)
    return type(exc).__name__


class stop_before_deadline(stop_base):
    """Stop when the coming wait would not end before the inbound request's deadline.

    Without a current request, or one with no deadline, it never stops.
    """

    def __call__(self, retry_state: RetryCallState) -> bool:
        context = request_context.current()
        remaining = None if context is None else context.remaining()
        return remaining is not None and retry_state.upcoming_sleep >= remaining


class wait_full_jitter(wait_base):
    """A uniform draw between zero and `ceiling`'s wait ("full jitter"), so that clients
    that failed together do not all come back together."""

    def __init__(self, ceiling: wait_base, random: Callable[[], float]) -> None:
        self.ceiling = ceiling
        self.random = random

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.ceiling(retry_state) * self.random()


class wait_at_least_retry_after(wait_base):
    """`wait`, or the Retry-After the upstream sent with its error when that is longer."""

    def __init__(self, wait: wait_base) -> None:
        self.wait = wait

    def __call__(self, retry_state: RetryCallState) -> float:
        seconds = self.wait(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, GatewayError) and exc.retry_after is not None:
            return max(seconds, exc.retry_after)
        return seconds


class Retrying(HopWrapper):
    """Repeats `infer` and `explain` on the inner hop when `is_retryable` says so.

    Passthrough bodies are bytes, so they are resent as they are. ``model_metadata`` is
    retried as inference is. ``ready`` and ``aclose`` are not retried: a probe that fails
    should say so at once.
    """

    def __init__(
        self,
        inner: Hop,
        policy: RetryPolicy,
        *,
        metrics: Metrics | None = None,
        model_name: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(inner)
        if policy.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {policy.retries}")
        self.policy = policy
        self.metrics = metrics
        self.model_name = model_name
        self._pool = inner.upstream_pool()
        # None when nothing is retried: the call then goes straight to the inner hop.
        self._retrying: AsyncRetrying | None = None
        if policy.retries > 0:
            backoff = wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
            stop = stop_after_attempt(policy.retries + 1) | stop_before_deadline()
            if policy.budget is not None:
                stop = stop | stop_before_delay(policy.budget)
            self._stop = stop
            self._retrying = AsyncRetrying(
                sleep=sleep,
                stop=stop,
                wait=wait_at_least_retry_after(wait_full_jitter(backoff, random or _random.random)),
                retry=retry_if_exception(lambda exc: is_retryable(exc, policy)),
                before_sleep=self._before_sleep,
                # The caller sees the upstream's last error, not tenacity's RetryError.
                reraise=True,
            )

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self._call("infer", payload, headers)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self._call("explain", payload, headers)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        metadata: Metadata | None = await self._call(
            "model_metadata", (model_name, version), headers
        )
        return metadata

    async def _call(self, verb: str, payload: Any, headers: Headers) -> Any:
        if self._pool is None:
            return await self._attempts(verb, payload, headers, None)
        with self._pool.call() as call, calling(call):
            if self._retrying is None:  # the default: one attempt (a coroutine fewer)
                return await self.inner.attempt(verb, payload, headers, 1)
            return await self._attempts(verb, payload, headers, call)

    async def _attempts(
        self, verb: str, payload: Any, headers: Headers, call: PoolCall[Any] | None
    ) -> Any:
        if self._retrying is None:
            return await self.inner.attempt(verb, payload, headers, 1)
        # A copy per call: tenacity keeps its iteration state on the object, and concurrent
        # requests share this hop. The strategies themselves are shared.
        retrying = self._retrying.copy()
        if call is not None:
            # Asked last, so that a retry slot is taken only for a retry about to happen.
            retrying = self._retrying.copy(stop=self._stop | _stop_when_refused(call, self.name))
        with self._within_budget():
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    return await self.inner.attempt(verb, payload, headers, number)
        raise AssertionError("tenacity ended its attempts without an outcome")  # unreachable

    @contextlib.contextmanager
    def _within_budget(self) -> Iterator[None]:
        """The budget as the call's deadline, when it ends first: each attempt's timeout is
        then cut to what is left of it (`gateway.hops.common.call_timeout`), so that an attempt
        begun late cannot take a whole timeout of its own past the budget."""
        budget = self.policy.budget
        context = request_context.current()
        deadline = math.inf if budget is None else time.monotonic() + budget
        current = math.inf if context is None or context.deadline is None else context.deadline
        if current <= deadline:
            yield
            return
        # The same request (its timings lists are shared), with the earlier deadline.
        narrowed = (
            RequestContext(request_id="", protocol="", deadline=deadline)
            if context is None
            else dataclasses.replace(context, deadline=deadline)
        )
        with request_context.serving(narrowed):
            yield

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        reason = retry_reason(outcome.exception() if outcome is not None else None)
        wait = retry_state.upcoming_sleep
        if self.metrics is not None:
            self.metrics.hop_retries.labels(self.model_name, self.name, reason).inc()
        trace.get_current_span().add_event(
            "retry",
            {"attempt": retry_state.attempt_number, "reason": reason, "wait_seconds": wait},
        )
        logger.info(
            "hop %s: attempt %d failed (%s), retrying in %.3fs",
            self.name,
            retry_state.attempt_number,
            reason,
            wait,
        )


class _stop_when_refused(stop_when_retry_refused):
    """`stop_when_retry_refused`, saying so on the request's span and in the log."""

    def __init__(self, call: PoolCall[Any], hop: str) -> None:
        super().__init__(call)
        self.hop = hop

    def __call__(self, retry_state: RetryCallState) -> bool:
        if not super().__call__(retry_state):
            return False
        outcome = retry_state.outcome
        reason = retry_reason(outcome.exception() if outcome is not None else None)
        trace.get_current_span().add_event(
            "retry_refused", {"attempt": retry_state.attempt_number, "reason": reason}
        )
        logger.info(
            "hop %s: attempt %d failed (%s); no retry: the retry budget or the pool's "
            "concurrency limit refused it",
            self.hop,
            retry_state.attempt_number,
            reason,
        )
        return True
