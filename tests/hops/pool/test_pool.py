"""A pool's choices per attempt: untried healthy replicas first, panic when none is healthy,
refusals at once when full or out of retry budget, replicas that leave finishing first."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from gateway.errors import UpstreamStatusError, UpstreamUnavailable
from gateway.hops.pool import (
    Endpoint,
    HealthCheckPolicy,
    NoReplica,
    Outcome,
    OutlierPolicy,
    Pool,
    PoolSaturated,
    PoolSettings,
    Replica,
    RetryBudget,
    StaticResolver,
    parse_target,
    stop_when_retry_refused,
)

from .support import Clock, Recorder, Ticker, by_port, endpoint_pool

THREE = "10.0.0.1:1,10.0.0.1:2,10.0.0.1:3"
DOWN = UpstreamStatusError("down", status=503)


def eject(pool: Pool[Any], port: int) -> None:
    replica = by_port(pool)[port]
    for _ in range(pool.settings.outlier.consecutive_failures):
        pool.outliers.record(replica, Outcome.GATEWAY_FAILURE, pool.replicas)
    assert replica.ejected


def test_a_lease_counts_the_attempt_in_flight_until_released() -> None:
    clock, recorder = Clock(), Recorder()
    pool = endpoint_pool(THREE, clock=clock, observer=recorder)
    with pool.call() as call:
        lease = call.attempt()
        assert lease.attempt == 1
        assert lease.client == lease.endpoint
        assert lease.replica.outstanding == 1
        assert pool.in_flight == 1
        clock.advance(0.25)
        lease.succeeded()
        lease.failed(DOWN)  # released once: the second report is ignored
    assert lease.replica.outstanding == 0
    assert pool.in_flight == 0
    assert recorder.named("attempt") == [("attempt", str(lease.endpoint), Outcome.SUCCESS, 0.25)]


def test_leaving_the_block_reports_the_outcome_of_the_error_raised() -> None:
    pool = endpoint_pool(THREE)
    with pool.call() as call:
        with pytest.raises(UpstreamStatusError), call.attempt() as lease:
            raise DOWN
        assert lease.outcome is Outcome.GATEWAY_FAILURE
        assert call.last_error is DOWN
        assert lease.replica.failures == 1


def test_retries_go_to_replicas_not_tried_yet() -> None:
    pool = endpoint_pool(THREE)
    for _ in range(20):
        with pool.call() as call:
            ports = []
            for _ in range(3):
                with call.attempt() as lease:
                    ports.append(lease.endpoint.port)
            assert sorted(ports) == [1, 2, 3]
            # Every replica tried: a fourth attempt goes to one of them again.
            with call.attempt() as lease:
                assert lease.attempt == 4


def test_an_ejected_replica_is_not_picked_while_another_is_left() -> None:
    pool = endpoint_pool(
        THREE, settings=PoolSettings(outlier=OutlierPolicy(max_ejection_percent=50))
    )
    eject(pool, 2)
    picked = Counter()
    for _ in range(200):
        with pool.call() as call, call.attempt() as lease:
            picked[lease.endpoint.port] += 1
    assert picked[2] == 0
    assert picked[1] > 60
    assert picked[3] > 60


def test_a_retry_goes_back_to_the_one_healthy_replica_rather_than_a_sick_one() -> None:
    pool = endpoint_pool(
        THREE, settings=PoolSettings(outlier=OutlierPolicy(max_ejection_percent=100))
    )
    eject(pool, 1)
    eject(pool, 2)
    with pool.call() as call:
        assert [call.attempt().endpoint.port for _ in range(3)] == [3, 3, 3]


def test_with_every_replica_ejected_the_pool_panics_and_uses_them_all() -> None:
    pool = endpoint_pool(
        THREE, settings=PoolSettings(outlier=OutlierPolicy(max_ejection_percent=100))
    )
    for port in (1, 2, 3):
        eject(pool, port)
    with pool.call() as call:
        assert sorted(call.attempt().endpoint.port for _ in range(3)) == [1, 2, 3]
    assert not pool.healthy()


def test_an_ejected_replica_is_picked_again_once_its_time_is_up() -> None:
    clock = Clock()
    pool = endpoint_pool("10.0.0.1:1,10.0.0.1:2", clock=clock)
    eject(pool, 1)
    clock.advance(pool.settings.outlier.base_ejection_time)
    picked = set()
    for _ in range(50):
        with pool.call() as call, call.attempt() as lease:
            picked.add(lease.endpoint.port)
    assert picked == {1, 2}


def test_an_empty_pool_refuses_with_no_replica() -> None:
    recorder = Recorder()
    pool = endpoint_pool("predictor:8080", resolver=StaticResolver(), observer=recorder)
    with pool.call() as call:
        with pytest.raises(NoReplica, match="predictor:8080"):
            call.attempt()
        assert isinstance(call.last_error, NoReplica)
    assert recorder.named("refused") == [("refused", "no_replica")]


def test_past_its_limit_a_pool_refuses_at_once_with_retry_after() -> None:
    recorder = Recorder()
    settings = PoolSettings(max_in_flight=2, saturated_retry_after=2.0)
    pool = endpoint_pool(THREE, settings=settings, observer=recorder)
    first, second, third = pool.call(), pool.call(), pool.call()
    held = [first.attempt(), second.attempt()]
    with pytest.raises(PoolSaturated) as refused:
        third.attempt()
    assert refused.value.retry_after == 2.0
    assert pool.in_flight == 2
    assert recorder.named("refused") == [("refused", "concurrency")]
    held[0].succeeded()
    third.attempt().succeeded()


def test_a_retry_is_not_asked_for_when_the_pool_is_full() -> None:
    pool = endpoint_pool(THREE, settings=PoolSettings(max_in_flight=1))
    with pool.call() as call:
        with pytest.raises(UpstreamStatusError), call.attempt():
            raise DOWN
        other = pool.call().attempt()
        assert not call.may_retry()
        other.succeeded()
        assert call.may_retry()


def test_a_retry_the_budget_refuses_raises_the_upstreams_own_error() -> None:
    budget, recorder = RetryBudget(percent=0, min_concurrency=0), Recorder()
    pool = endpoint_pool(THREE, budget=budget, observer=recorder)
    with pool.call() as call:
        with pytest.raises(UpstreamStatusError), call.attempt():
            raise DOWN
        with pytest.raises(UpstreamStatusError) as again:
            call.attempt()
    assert again.value is DOWN
    assert recorder.named("refused") == [("refused", "retry_budget")]
    assert budget.requests == 0
    assert budget.retries == 0


def test_a_retry_holds_its_budget_slot_until_its_attempt_ends() -> None:
    budget = RetryBudget(percent=0, min_concurrency=1)
    pool = endpoint_pool(THREE, budget=budget)
    first, second = pool.call(), pool.call()
    for call in (first, second):
        with pytest.raises(UpstreamStatusError), call.attempt():
            raise DOWN
    assert first.may_retry()
    assert first.may_retry()
    assert budget.retries == 1
    assert not second.may_retry()
    retry = first.attempt()
    assert retry.attempt == 2
    assert budget.retries == 1
    retry.succeeded()
    assert budget.retries == 0
    assert second.may_retry()
    second.close()
    first.close()
    assert budget.retries == 0
    assert budget.requests == 0


async def test_tenacity_stops_at_once_when_the_budget_refuses() -> None:
    budget = RetryBudget(percent=0, min_concurrency=1)
    pool = endpoint_pool(THREE, budget=budget)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def send(call: Any) -> None:
        with call.attempt():
            raise DOWN

    holder = pool.call()  # another request holding the one retry slot
    with pytest.raises(UpstreamStatusError), holder.attempt():
        raise DOWN
    assert holder.may_retry()
    with pool.call() as call:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(3) | stop_when_retry_refused(call),
            retry=retry_if_exception_type(UpstreamStatusError),
            sleep=sleep,
            reraise=True,
        )
        with pytest.raises(UpstreamStatusError):
            await retrying(send, call)
        assert call.attempts == 1
        assert slept == []
        holder.close()
        with pytest.raises(UpstreamStatusError):
            await retrying(send, call)
        # The slot is free again: two retries, each after a (zero) wait.
        assert call.attempts == 4
        assert len(slept) == 2
    assert budget.retries == 0
    assert budget.requests == 0


async def test_a_replica_that_leaves_finishes_its_attempts_then_its_client_closes() -> None:
    resolver, recorder = StaticResolver({"svc": ["10.0.0.1", "10.0.0.2"]}), Recorder()
    closed: list[str] = []

    async def close(client: str) -> None:
        closed.append(client)

    pool = Pool(
        parse_target("svc:80", default_port=80),
        open_client=lambda endpoint: endpoint.hostport,
        close_client=close,
        resolver=resolver,
        observer=recorder,
    )
    await pool.start()
    leaving = next(r for r in pool.replicas if r.endpoint.address == "10.0.0.2")
    with pool.call() as call:
        lease = call.attempt()
        while lease.replica is not leaving:
            lease.succeeded()
            lease = call.attempt()
        assert lease.client == "10.0.0.2:80"  # opened on first use
        resolver.set("svc", ["10.0.0.1", "10.0.0.3"])
        await pool.endpoints.refresh()
        assert {r.endpoint.address for r in pool.replicas} == {"10.0.0.1", "10.0.0.3"}
        assert leaving.retired
        assert closed == []
        assert recorder.named("removed") == []
        lease.failed(DOWN)  # a retired replica's failures eject nothing
        await asyncio.sleep(0)
    assert not leaving.ejected
    assert recorder.named("removed") == [("removed", "svc:80 (10.0.0.2:80)")]
    assert closed == ["10.0.0.2:80"]
    await pool.aclose()
    assert closed == ["10.0.0.2:80"]  # the only client ever opened, closed once


async def test_health_checks_keep_failing_replicas_out_and_bring_them_back() -> None:
    ticker, recorder = Ticker(), Recorder()
    answers = {1: True, 2: False, 3: True}

    async def probe(replica: Replica[Endpoint]) -> bool:
        answer = answers[replica.endpoint.port]
        if answer is None:
            await asyncio.sleep(10)  # hangs: the probe's timeout ends it
        return bool(answer)

    policy = HealthCheckPolicy(interval=5, timeout=0.01, healthy_threshold=2, unhealthy_threshold=2)
    pool = endpoint_pool(
        THREE,
        settings=PoolSettings(health_check=policy),
        probe=probe,
        observer=recorder,
        sleep=ticker.sleep,
    )
    assert not pool.healthy()  # nothing is known before the first probe
    await pool.start()
    replicas = by_port(pool)
    assert [replicas[p].health.healthy for p in (1, 2, 3)] == [True, False, True]
    with pool.call() as call:
        assert {call.attempt().endpoint.port for _ in range(2)} == {1, 3}

    answers.update({2: True, 3: None})
    await ticker.tick()
    assert replicas[3].health.healthy  # one failure is not enough
    assert replicas[2].health.healthy  # never healthy before: one success is
    await ticker.tick()
    assert not replicas[3].health.healthy
    assert ticker.asked == [5, 5, 5]
    assert ("health", "10.0.0.1:3", False) in recorder.events
    assert await pool.ready()
    assert pool.healthy()
    await pool.aclose()


async def test_a_replica_that_joins_is_probed_at_once() -> None:
    resolver, ticker = StaticResolver({"svc": ["10.0.0.1"]}), Ticker()
    probed: list[str] = []

    async def probe(replica: Replica[Endpoint]) -> bool:
        probed.append(replica.endpoint.address)
        return True

    pool = endpoint_pool(
        "svc:80",
        resolver=resolver,
        settings=PoolSettings(health_check=HealthCheckPolicy(interval=60)),
        probe=probe,
        sleep=ticker.sleep,
    )
    await pool.start()
    resolver.set("svc", ["10.0.0.1", "10.0.0.2"])
    await pool.endpoints.refresh()
    joined = next(r for r in pool.replicas if r.endpoint.address == "10.0.0.2")
    for _ in range(10):  # the probe is a task of the pool's: let it run (bounded)
        if joined.health.healthy:
            break
        await asyncio.sleep(0)
    assert probed == ["10.0.0.1", "10.0.0.2"]
    assert joined.health.healthy
    assert await pool.ready()
    assert pool.healthy()
    await pool.aclose()


async def test_ready_means_one_replica_says_so() -> None:
    pool = endpoint_pool(THREE)
    asked: list[int] = []

    async def check(replica: Replica[Endpoint]) -> bool:
        asked.append(replica.endpoint.port)
        if replica.endpoint.port == 1:
            raise OSError("refused")
        return replica.endpoint.port == 3

    async def never(replica: Replica[Endpoint]) -> bool:
        await asyncio.sleep(10)
        return True

    async def refuses(replica: Replica[Endpoint]) -> bool:
        return False

    assert await pool.ready(check)
    assert 3 in asked
    assert not await pool.ready(refuses)
    assert not await pool.ready(never, timeout=0.01)
    assert await pool.ready()  # no check: a replica that is not ejected


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="balancer"):
        PoolSettings(balancer="random")
    with pytest.raises(ValueError, match="max_in_flight"):
        PoolSettings(max_in_flight=0)
    with pytest.raises(ValueError, match="probe"):
        endpoint_pool(THREE, settings=PoolSettings(health_check=HealthCheckPolicy()))


def test_round_robin_when_asked() -> None:
    pool = endpoint_pool(THREE, settings=PoolSettings(balancer="round_robin"))
    ports = []
    for _ in range(6):
        with pool.call() as call, call.attempt() as lease:
            ports.append(lease.endpoint.port)
    assert ports[:3] == ports[3:]
    assert sorted(ports[:3]) == [1, 2, 3]


def test_attempts_are_counted_per_replica() -> None:
    pool = endpoint_pool("10.0.0.1:1")
    with pool.call() as call:
        call.attempt().failed(UpstreamUnavailable("refused"))
        call.attempt().succeeded()
    replica = pool.replicas[0]
    assert (replica.attempts, replica.failures, replica.outstanding) == (2, 1, 0)
