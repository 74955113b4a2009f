"""Which replica gets the next attempt: least outstanding requests of two random choices
(Envoy's LEAST_REQUEST with ``choice_count`` 2, the default), or round robin.

Two random choices keep a slow replica from collecting work (its attempts stay outstanding
longer, so it loses most comparisons) without the herd that "always the least loaded"
causes when many requests pick at once on stale counts. A balancer sees only the
candidates the pool hands it: healthy, and not yet tried by this request when possible.
"""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["BALANCERS", "Balancer", "LeastRequest", "Loaded", "RoundRobin", "balancer"]


class Loaded(Protocol):
    @property
    def outstanding(self) -> int: ...


R = TypeVar("R", bound=Loaded)


class Balancer(Protocol):
    def choose(self, candidates: Sequence[R]) -> R:
        """One of `candidates` (never empty)."""
        ...


class LeastRequest:
    """The least loaded of `choice_count` candidates drawn at random (without repeats)."""

    def __init__(self, random: _random.Random, choice_count: int = 2) -> None:
        if choice_count < 2:
            raise ValueError(f"choice_count must be 2 or more, not {choice_count}")
        self.random = random
        self.choice_count = choice_count

    def choose(self, candidates: Sequence[R]) -> R:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        if self.choice_count == 2:
            # Two distinct draws without random.sample, which costs ten times as much.
            first = int(self.random.random() * count)
            second = int(self.random.random() * (count - 1))
            second += second >= first
            a, b = candidates[first], candidates[second]
            # The first drawn wins ties, and which is drawn first is random.
            return b if b.outstanding < a.outstanding else a
        drawn = self.random.sample(candidates, min(self.choice_count, count))
        return min(drawn, key=lambda replica: replica.outstanding)


class RoundRobin:
    """Each candidate in turn, from a random start (so that worker processes do not all
    send their first request to the same replica)."""

    def __init__(self, random: _random.Random) -> None:
        self._next = random.randrange(1 << 30)

    def choose(self, candidates: Sequence[R]) -> R:
        chosen = candidates[self._next % len(candidates)]
        self._next += 1
        return chosen


BALANCERS = ("least_request", "round_robin")


def balancer(name: str, random: _random.Random, choice_count: int = 2) -> Balancer:
    """The balancer called `name` (one of `BALANCERS`)."""
    if name == "least_request":
        return LeastRequest(random, choice_count)
    if name == "round_robin":
        return RoundRobin(random)
    raise ValueError(f"the balancer must be one of {', '.join(BALANCERS)}, not {name!r}")
