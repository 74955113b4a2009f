"""`PoolCall` and `Lease`: how one request uses a pool, an attempt at a time.

    with pool.call() as call:              # the request counts for the retry budget
        ...                                 # per attempt (tenacity's loop around it):
        with call.attempt() as lease:       # a replica not tried yet by this request
            send to lease.endpoint with lease.client
                                            # leaving the block reports the outcome,
                                            # read from the error raised (none: success)

A retry is asked for with `PoolCall.may_retry` when the decision is made, before the
backoff (`stop_when_retry_refused` does it from tenacity's ``stop``), so that a refused retry
fails at once with the upstream's error. `attempt` checks the budget too, for callers that
do not ask: a refused retry then re-raises the previous attempt's error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from tenacity import RetryCallState
from tenacity.stop import stop_base

from gateway.errors import UpstreamUnavailable
from gateway.hops.pool.budget import RetryBudget
from gateway.hops.pool.outcome import Outcome, outcome_of
from gateway.hops.pool.replica import Replica
from gateway.hops.pool.target import Endpoint

__all__ = ["Lease", "Picker", "PoolCall", "calling", "leased", "stop_when_retry_refused"]

logger = logging.getLogger("gateway.hops.pool")

C = TypeVar("C")


class Picker(Protocol[C]):
    """What a call needs from its pool (`gateway.hops.pool.pool.Pool` is one)."""

    role: str
    budget: RetryBudget | None
    clock: Callable[[], float]

    def pick(self, exclude: Sequence[Replica[C]]) -> Replica[C]: ...

    def saturated(self) -> bool: ...

    def finished(self, replica: Replica[C], outcome: Outcome, seconds: float) -> None: ...

    def refused(self, reason: str) -> None: ...


class PoolCall(Generic[C]):
    """One request through a pool: its attempts, the replicas they went to, its budget."""

    def __init__(self, pool: Picker[C]) -> None:
        self.pool = pool
        self.tried: list[Replica[C]] = []
        self.attempts = 0
        #: The error of the last attempt that failed, re-raised if a retry is refused.
        self.last_error: BaseException | None = None
        self._budget = pool.budget
        self._slot = False
        self._open = True
        if self._budget is not None:
            self._budget.request_started()

    def may_retry(self) -> bool:
        """Whether another attempt may go out now: the pool has room and the retry budget
        a free slot, which this call then holds until that attempt ends."""
        if self._slot:
            return True
        if self.pool.saturated():
            self.pool.refused("concurrency")
            return False
        if self._budget is not None:
            if not self._budget.try_retry():
                self.pool.refused("retry_budget")
                logger.info("%s: retry refused by the retry budget", self.pool.role)
                return False
            self._slot = True
        return True

    def attempt(self) -> Lease[C]:
        """The next attempt's lease on a replica, other than those tried when one is left.

        Raises `PoolSaturated` or `NoReplica` (nothing was sent), or, for a retry the budget
        refuses, the previous attempt's error."""
        if self.attempts and not self.may_retry():
            raise self.last_error or UpstreamUnavailable(
                f"the retry budget refused another attempt on the {self.pool.role}",
                upstream=self.pool.role,
            )
        self.attempts += 1
        try:
            replica = self.pool.pick(self.tried)
        except BaseException as exc:
            self.last_error = exc
            self._release_slot()
            raise
        lease = Lease(self, replica, self.attempts, self._slot)
        self._slot = False
        self.tried.append(replica)
        return lease

    def close(self) -> None:
        if self._open:
            self._open = False
            self._release_slot()
            if self._budget is not None:
                self._budget.request_finished()

    def _release_slot(self) -> None:
        if self._slot and self._budget is not None:
            self._budget.retry_finished()
        self._slot = False

    def __enter__(self) -> PoolCall[C]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Lease(Generic[C]):
    """One attempt on one replica. Released once: on leaving its ``with`` block, or by
    `succeeded` / `failed` / `release`."""

    def __init__(self, call: PoolCall[C], replica: Replica[C], attempt: int, slot: bool) -> None:
        self.call = call
        self.replica = replica
        #: 1 for the first attempt of the request, 2 for its first retry...
        self.attempt = attempt
        self.started = call.pool.clock()
        self.outcome: Outcome | None = None
        self._slot = slot

    @property
    def endpoint(self) -> Endpoint:
        return self.replica.endpoint

    @property
    def client(self) -> C:
        return self.replica.client

    def succeeded(self) -> None:
        self.release(Outcome.SUCCESS)

    def failed(self, exc: BaseException) -> Outcome:
        """Release with the outcome `exc` stands for (see `gateway.hops.pool.outcome`)."""
        outcome = outcome_of(exc)
        if outcome is not Outcome.CANCELLED:
            self.call.last_error = exc
        self.release(outcome)
        return outcome

    def release(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        pool = self.call.pool
        if self._slot and pool.budget is not None:
            pool.budget.retry_finished()
        self._slot = False
        pool.finished(self.replica, outcome, pool.clock() - self.started)

    def __enter__(self) -> Lease[C]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.succeeded()
        else:
            self.failed(exc)


class stop_when_retry_refused(stop_base):
    """A tenacity ``stop`` that asks `call` for a retry: put it last in ``a | b | this``, so
    that it is asked only when nothing else stops, and a slot is never taken in vain."""

    def __init__(self, call: PoolCall[Any]) -> None:
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.call.may_retry()


# The call a retrying wrapper opened for the request being sent, so that the transport
# underneath leases each attempt from it (the Hop interface carries no pool call).
_current: ContextVar[PoolCall[Any] | None] = ContextVar("gateway_pool_call", default=None)


class calling:
    """Make `call` the one `leased` takes attempts from, inside the block. (Classes, not
    generators, here and below: they run on every request.)"""

    __slots__ = ("_call", "_token")

    def __init__(self, call: PoolCall[Any]) -> None:
        self._call = call

    def __enter__(self) -> PoolCall[Any]:
        self._token = _current.set(self._call)
        return self._call

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


class leased(Generic[C]):
    """The lease of one attempt on `pool`: from the call `calling` made current when it is
    this pool's, else from a call of its own (a probe, a lookup of what the upstream is)."""

    __slots__ = ("_lease", "_own", "_pool")

    def __init__(self, pool: Picker[C]) -> None:
        self._pool = pool

    def __enter__(self) -> Lease[C]:
        call = _current.get()
        own = None
        if call is None or call.pool is not self._pool:
            call = own = PoolCall(self._pool)
        self._own = own
        try:
            self._lease: Lease[C] = call.attempt()
        except BaseException:
            if own is not None:
                own.close()
            raise
        return self._lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._lease.__exit__(exc_type, exc, tb)
        finally:
            if self._own is not None:
                self._own.close()
