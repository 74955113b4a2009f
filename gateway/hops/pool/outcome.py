"""How an attempt on a replica ended, read from the error the transport raised, and the
errors a pool raises itself before anything is sent.

    error raised by the transport              outcome           the replica's fault?
    none                                        SUCCESS           no (resets the count)
    UpstreamStatusError 4xx                     CLIENT_ERROR      no: it answered
    UpstreamStatusError 500, 501, 505...        SERVER_ERROR      no: a model's own failure
    UpstreamStatusError 502/503/504             GATEWAY_FAILURE   yes
    UpstreamTimeout, UpstreamProtocolError      GATEWAY_FAILURE   yes (Envoy: a local 504/503)
    UpstreamUnavailable (connect failed)        CONNECT_FAILURE   yes
    any other error (ours), cancellation        LOCAL, CANCELLED  not counted either way

The counting follows Envoy's ``consecutive_gateway_failure``: gateway failures and connect
failures add up, any answer that is not one resets the count.
"""

from __future__ import annotations

import asyncio
import enum

from gateway.errors import (
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)

__all__ = ["NoReplica", "Outcome", "PoolSaturated", "outcome_of"]

_GATEWAY_STATUSES = frozenset({502, 503, 504})


class Outcome(enum.Enum):
    SUCCESS = "success"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"
    GATEWAY_FAILURE = "gateway_failure"
    CONNECT_FAILURE = "connect_failure"
    LOCAL = "local"
    CANCELLED = "cancelled"

    @property
    def is_failure(self) -> bool:
        """Counts towards ejecting the replica."""
        return self in (Outcome.GATEWAY_FAILURE, Outcome.CONNECT_FAILURE)

    @property
    def is_answer(self) -> bool:
        """The replica answered (well or not, but not as a broken gateway would)."""
        return self in (Outcome.SUCCESS, Outcome.CLIENT_ERROR, Outcome.SERVER_ERROR)


def outcome_of(exc: BaseException | None) -> Outcome:
    """The outcome of an attempt that raised `exc` (None: it succeeded)."""
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, asyncio.CancelledError):
        return Outcome.CANCELLED
    if isinstance(exc, NoReplica | PoolSaturated):
        return Outcome.LOCAL
    if isinstance(exc, UpstreamUnavailable):
        return Outcome.CONNECT_FAILURE
    if isinstance(exc, UpstreamStatusError):
        if exc.status in _GATEWAY_STATUSES:
            return Outcome.GATEWAY_FAILURE
        return Outcome.SERVER_ERROR if exc.status >= 500 else Outcome.CLIENT_ERROR
    if isinstance(exc, UpstreamError):
        return Outcome.GATEWAY_FAILURE
    return Outcome.LOCAL


class NoReplica(UpstreamUnavailable):
    """The pool has no replica to send to (none resolved yet, or the name has none)."""


class PoolSaturated(UpstreamUnavailable):
    """The pool has as many attempts in flight as it allows: refused at once, not queued.

    A 503 / UNAVAILABLE with ``Retry-After``. Not to be retried by the hop: repeating it at
    once only adds to the load that caused it."""
