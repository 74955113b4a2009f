"""Passive ejection as Envoy does it: consecutive gateway failures, a growing ejection time,
a cap on the share ejected, and readmission when the time is up."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from gateway.hops.pool import Endpoint, Outcome, OutlierPolicy, Replica
from gateway.hops.pool.outlier import OutlierDetector

from .support import Clock, Recorder

FAIL = Outcome.GATEWAY_FAILURE


def replicas(count: int) -> list[Replica[Any]]:
    return [Replica(Endpoint("10.0.0.1", "10.0.0.1", 8000 + n), lambda e: e) for n in range(count)]


def detector(clock: Clock, **policy: Any) -> tuple[OutlierDetector, Recorder]:
    recorder = Recorder()
    settings = OutlierPolicy(**{"base_ejection_time": 30.0, **policy})
    return (
        OutlierDetector(settings, clock=clock, random=random.Random(1), observer=recorder),
        recorder,
    )


def fail(
    detector: OutlierDetector, replica: Replica[Any], pool: list[Replica[Any]], n: int
) -> None:
    for _ in range(n):
        detector.record(replica, FAIL, pool)


def test_five_failures_in_a_row_eject_for_the_base_time_then_it_comes_back() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, recorder = detector(clock)
    fail(outliers, pool[0], pool, 4)
    assert not pool[0].ejected
    outliers.record(pool[0], Outcome.CONNECT_FAILURE, pool)
    assert pool[0].ejected
    assert pool[0].outlier.ejected_until == clock.now + 30
    assert recorder.named("ejected") == [("ejected", "10.0.0.1:8000", 30.0)]
    clock.advance(29.9)
    outliers.readmit_due(pool)
    assert pool[0].ejected
    clock.advance(0.1)
    outliers.readmit_due(pool)
    assert not pool[0].ejected
    assert pool[0].outlier.consecutive == 0
    assert recorder.named("readmitted") == [("readmitted", "10.0.0.1:8000")]


@pytest.mark.parametrize("answer", [Outcome.SUCCESS, Outcome.CLIENT_ERROR, Outcome.SERVER_ERROR])
def test_an_answer_resets_the_count(answer: Outcome) -> None:
    clock, pool = Clock(), replicas(3)
    outliers, _ = detector(clock)
    fail(outliers, pool[0], pool, 4)
    outliers.record(pool[0], answer, pool)
    fail(outliers, pool[0], pool, 4)
    assert not pool[0].ejected


@pytest.mark.parametrize("neutral", [Outcome.LOCAL, Outcome.CANCELLED])
def test_our_own_failures_and_cancellations_count_for_nothing(neutral: Outcome) -> None:
    clock, pool = Clock(), replicas(3)
    outliers, _ = detector(clock)
    fail(outliers, pool[0], pool, 4)
    outliers.record(pool[0], neutral, pool)
    outliers.record(pool[0], FAIL, pool)
    assert pool[0].ejected


def test_each_ejection_lasts_longer_up_to_the_cap() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, recorder = detector(clock, max_ejection_time=100.0)
    for _ in range(6):
        fail(outliers, pool[0], pool, 5)
        clock.now = pool[0].outlier.ejected_until or clock.now
        outliers.readmit_due(pool)
    assert [event[2] for event in recorder.named("ejected")] == [30, 60, 90, 100, 100, 100]
    assert pool[0].outlier.ejections == 6


def test_the_multiplier_drops_by_one_per_interval_spent_healthy() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, recorder = detector(clock, interval=10.0)
    for _ in range(3):
        fail(outliers, pool[0], pool, 5)
        clock.now = pool[0].outlier.ejected_until or clock.now
        outliers.readmit_due(pool)
    assert pool[0].outlier.multiplier == 3
    clock.advance(25.0)  # two whole intervals back in the pool
    fail(outliers, pool[0], pool, 5)
    assert recorder.named("ejected")[-1][2] == 60.0


def test_failures_of_attempts_sent_before_the_ejection_change_nothing() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, recorder = detector(clock)
    fail(outliers, pool[0], pool, 5)
    fail(outliers, pool[0], pool, 20)
    assert len(recorder.named("ejected")) == 1


@pytest.mark.parametrize(
    ("size", "percent", "one", "ejectable"),
    [
        (10, 10.0, False, 1),  # Envoy: 100 x (0 + 1) / 10 <= 10
        (20, 10.0, False, 2),
        (3, 10.0, False, 0),  # Envoy's default: a 3-replica pool ejects nothing
        (3, 10.0, True, 1),  # always_eject_one (ours by default): one
        (3, 50.0, True, 1),  # 2 of 3 would be 67%
        (4, 50.0, False, 2),
        (2, 100.0, False, 2),
    ],
)
def test_never_more_than_the_share_allows(
    size: int, percent: float, one: bool, ejectable: int
) -> None:
    clock, pool = Clock(), replicas(size)
    outliers, _ = detector(clock, max_ejection_percent=percent, always_eject_one=one)
    for replica in pool:
        fail(outliers, replica, pool, 5)
    assert sum(replica.ejected for replica in pool) == ejectable


def test_a_refused_ejection_needs_a_new_run_of_failures() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, _ = detector(clock)
    fail(outliers, pool[0], pool, 5)
    fail(outliers, pool[1], pool, 5)  # refused: one of three is out already
    assert not pool[1].ejected
    assert pool[1].outlier.consecutive == 0
    clock.now = pool[0].outlier.ejected_until or clock.now
    outliers.readmit_due(pool)
    fail(outliers, pool[1], pool, 4)
    assert not pool[1].ejected
    fail(outliers, pool[1], pool, 1)
    assert pool[1].ejected


def test_off_when_the_threshold_is_zero() -> None:
    clock, pool = Clock(), replicas(3)
    outliers, _ = detector(clock, consecutive_failures=0)
    fail(outliers, pool[0], pool, 50)
    assert not pool[0].ejected


def test_jitter_is_added_within_its_maximum() -> None:
    clock, pool = Clock(), replicas(1)
    outliers, recorder = detector(clock, max_jitter=5.0)
    fail(outliers, pool[0], pool, 5)
    assert 30.0 <= recorder.named("ejected")[0][2] <= 35.0


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"consecutive_failures": -1}, "consecutive_failures"),
        ({"base_ejection_time": 0}, "base_ejection_time"),
        ({"base_ejection_time": 30, "max_ejection_time": 10}, "max_ejection_time"),
        ({"max_ejection_percent": 120}, "max_ejection_percent"),
        ({"max_jitter": -1}, "jitter"),
    ],
)
def test_bad_policies_are_refused(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutlierPolicy(**policy)


def test_each_ejection_and_return_is_logged_once_however_many_attempts_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, pool = Clock(), replicas(3)
    outliers, recorder = detector(clock)
    with caplog.at_level(logging.INFO, logger="gateway.hops.pool"):
        fail(outliers, pool[0], pool, 200)  # ejected after 5; the rest were in flight
        fail(outliers, pool[1], pool, 200)  # one of three out already: held back each run
        clock.now = pool[0].outlier.ejected_until or clock.now
        outliers.readmit_due(pool)
        outliers.readmit_due(pool)
    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if "ejected for" in m] == [
        "upstream replica 10.0.0.1:8000 ejected for 30.0 s (ejection 1)"
    ]
    assert len([m for m in messages if "ejected already" in m]) == 1
    assert len([m for m in messages if "readmitted" in m]) == 1
    assert len(recorder.named("ejected")) == 1  # what the metric counts
    # An answer ends the run: the next refused ejection is said again.
    outliers.record(pool[1], Outcome.SUCCESS, pool)
    fail(outliers, pool[0], pool, 5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.hops.pool"):
        fail(outliers, pool[1], pool, 50)
    assert len([r for r in caplog.records if "ejected already" in r.getMessage()]) == 1
