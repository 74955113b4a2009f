"""What an attempt's error says about the replica it went to."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.errors import (
    InvalidInput,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    grpc_code,
    http_status,
)
from gateway.hops.pool import NoReplica, Outcome, PoolSaturated, outcome_of


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (None, Outcome.SUCCESS),
        (UpstreamStatusError("bad", status=400), Outcome.CLIENT_ERROR),
        (UpstreamStatusError("busy", status=429), Outcome.CLIENT_ERROR),
        (UpstreamStatusError("model failed", status=500), Outcome.SERVER_ERROR),
        (UpstreamStatusError("bad gateway", status=502), Outcome.GATEWAY_FAILURE),
        (UpstreamStatusError("down", status=503), Outcome.GATEWAY_FAILURE),
        (
            UpstreamStatusError("down", status=503, code=grpc.StatusCode.UNAVAILABLE),
            Outcome.GATEWAY_FAILURE,
        ),
        (UpstreamStatusError("slow", status=504), Outcome.GATEWAY_FAILURE),
        (UpstreamTimeout("slow"), Outcome.GATEWAY_FAILURE),
        (UpstreamProtocolError("garbage"), Outcome.GATEWAY_FAILURE),
        (UpstreamUnavailable("refused"), Outcome.CONNECT_FAILURE),
        (InvalidInput("header cannot be metadata"), Outcome.LOCAL),
        (RuntimeError("bug"), Outcome.LOCAL),
        (asyncio.CancelledError(), Outcome.CANCELLED),
        (NoReplica("none"), Outcome.LOCAL),
    ],
)
def test_outcomes(exc: BaseException | None, outcome: Outcome) -> None:
    assert outcome_of(exc) is outcome


def test_only_gateway_and_connect_failures_count_against_a_replica() -> None:
    assert {o for o in Outcome if o.is_failure} == {
        Outcome.GATEWAY_FAILURE,
        Outcome.CONNECT_FAILURE,
    }
    assert {o for o in Outcome if o.is_answer} == {
        Outcome.SUCCESS,
        Outcome.CLIENT_ERROR,
        Outcome.SERVER_ERROR,
    }


def test_a_saturated_pool_answers_503_unavailable_with_retry_after() -> None:
    exc = PoolSaturated("full", retry_after=1.0)
    assert http_status(exc) == 503
    assert grpc_code(exc) == grpc.StatusCode.UNAVAILABLE
    assert exc.retry_after == 1.0
