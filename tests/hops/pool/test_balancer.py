"""Balancers: the less loaded of two random choices, or each in turn."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from gateway.hops.pool.balancer import LeastRequest, RoundRobin, balancer


@dataclass(eq=False)
class Load:
    name: str
    outstanding: int = 0


def test_least_request_takes_the_less_loaded_of_its_two_choices() -> None:
    busy, idle = Load("busy", 5), Load("idle", 0)
    chooser = LeastRequest(random.Random(1))
    assert {chooser.choose([busy, idle]).name for _ in range(50)} == {"idle"}


def test_least_request_never_picks_the_most_loaded_of_three() -> None:
    loads = [Load("a", 1), Load("b", 2), Load("c", 9)]
    chooser = LeastRequest(random.Random(2))
    picked = Counter(chooser.choose(loads).name for _ in range(3000))
    # Of the three pairs, "a" wins two and "b" one; "c" never wins a comparison.
    assert picked["c"] == 0
    assert 1700 < picked["a"] < 2300
    assert 700 < picked["b"] < 1300


def test_least_request_splits_ties_evenly() -> None:
    loads = [Load(str(n)) for n in range(4)]
    chooser = LeastRequest(random.Random(3))
    picked = Counter(chooser.choose(loads).name for _ in range(4000))
    assert all(850 < count < 1150 for count in picked.values()), picked


def test_round_robin_takes_each_in_turn_from_a_random_start() -> None:
    loads = [Load("a"), Load("b"), Load("c")]
    starts = set()
    for seed in range(10):
        chooser = RoundRobin(random.Random(seed))
        order = [chooser.choose(loads).name for _ in range(6)]
        assert order[:3] == order[3:]
        assert sorted(order[:3]) == ["a", "b", "c"]
        starts.add(order[0])
    assert len(starts) > 1


def test_balancers_by_name() -> None:
    assert isinstance(balancer("least_request", random.Random()), LeastRequest)
    assert isinstance(balancer("round_robin", random.Random()), RoundRobin)
    with pytest.raises(ValueError, match="least_request, round_robin"):
        balancer("random", random.Random())
    with pytest.raises(ValueError, match="choice_count"):
        LeastRequest(random.Random(), choice_count=1)
