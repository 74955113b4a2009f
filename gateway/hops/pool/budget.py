"""`RetryBudget`: retries in flight across the whole process, capped as Envoy's retry budget
caps them (``budget_percent`` of the requests in flight, never below
``min_retry_concurrency``).

Without it every request retries on its own, so an outage of the predictors multiplies the
load on them by the number of attempts, just when they can least take it. With it, a total
outage costs at most `percent` more requests (or `min_concurrency` at a time, when little is
in flight), and the retries that do not fit fail at once with the upstream's own error.

A request counts from the pool call's start to its end (`gateway.hops.pool.call.PoolCall`),
whichever attempt it is on; a retry holds its slot from the decision to retry (before the
backoff) until its attempt ends, as in Envoy. Envoy counts the active upstream requests of
one cluster; this counts the requests through every pool of the process, so one budget
bounds the extra load from the whole gateway worker.
"""

from __future__ import annotations

import math

__all__ = ["RetryBudget"]


class RetryBudget:
    def __init__(self, percent: float = 20.0, min_concurrency: int = 3) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"the retry budget must be from 0 to 100 percent, not {percent}")
        if min_concurrency < 0:
            raise ValueError(f"min_retry_concurrency cannot be negative, not {min_concurrency}")
        self.percent = percent
        self.min_concurrency = min_concurrency
        self.requests = 0
        self.retries = 0
        self.refused = 0

    @property
    def limit(self) -> int:
        """Retries allowed in flight now."""
        share = math.floor(self.percent * self.requests / 100 + 1e-9)
        return max(self.min_concurrency, share)

    def request_started(self) -> None:
        self.requests += 1

    def request_finished(self) -> None:
        self.requests -= 1

    def try_retry(self) -> bool:
        """Take a retry slot if one is free (give it back with `retry_finished`)."""
        if self.retries >= self.limit:
            self.refused += 1
            return False
        self.retries += 1
        return True

    def retry_finished(self) -> None:
        self.retries -= 1
