"""The retry budget: retries in flight within a share of the requests in flight."""

from __future__ import annotations

import pytest

from gateway.hops.pool import RetryBudget


def test_the_floor_holds_when_few_requests_are_in_flight() -> None:
    budget = RetryBudget(percent=20, min_concurrency=3)
    budget.request_started()
    assert budget.limit == 3
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]
    assert budget.refused == 1
    budget.retry_finished()
    assert budget.try_retry()


def test_the_share_of_requests_in_flight_rules_above_the_floor() -> None:
    budget = RetryBudget(percent=20, min_concurrency=3)
    for _ in range(100):
        budget.request_started()
    assert budget.limit == 20
    assert sum(budget.try_retry() for _ in range(30)) == 20
    for _ in range(50):
        budget.request_finished()
    # 20 retries in flight, the limit now 10: none more until they drop below it.
    assert budget.limit == 10
    assert not budget.try_retry()
    for _ in range(11):
        budget.retry_finished()
    assert budget.try_retry()


def test_a_zero_budget_with_no_floor_refuses_every_retry() -> None:
    budget = RetryBudget(percent=0, min_concurrency=0)
    budget.request_started()
    assert not budget.try_retry()


@pytest.mark.parametrize(("percent", "floor"), [(-1, 3), (101, 3), (20, -1)])
def test_bad_settings_are_refused(percent: float, floor: int) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryBudget(percent, floor)
