"""What the transports share (hops.common): a call's timeout under the request's deadline,
upstream Server-Timing, Retry-After, and whose fault an unreadable payload or answer is."""

from __future__ import annotations

import time

import pytest

from gateway import request_context
from gateway.errors import (
    InferenceError,
    InvalidInput,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.hops.common import (
    call_timeout,
    decoded,
    json_body,
    merge_server_timing,
    retry_after,
    unsupported_payload,
)
from gateway.hops.settings import HopSettings
from gateway.request_context import RequestContext

SETTINGS = HopSettings(role="predictor", host="h:1", timeout=10)


def test_the_timeout_is_the_hops_cut_by_the_cap_and_the_deadline() -> None:
    assert call_timeout(SETTINGS) == 10
    assert call_timeout(SETTINGS, cap=5) == 5
    context = RequestContext("r", "v2", deadline=time.monotonic() + 2)
    with request_context.serving(context):
        assert 1.5 < call_timeout(SETTINGS) <= 2
    context.deadline = time.monotonic() - 1
    with request_context.serving(context), pytest.raises(UpstreamTimeout, match="deadline"):
        call_timeout(SETTINGS)


def test_upstream_timings_are_named_after_the_hop() -> None:
    merge_server_timing(["predict;dur=3"], "predictor")  # no request: nowhere to go
    context = RequestContext("r", "v2")
    with request_context.serving(context):
        merge_server_timing(['predict;dur=3, pre;desc="a, b";dur=1', " "], "predictor")
    assert context.upstream_timings == [
        "predictor.predict;dur=3",
        'predictor.pre;desc="a, b";dur=1',
    ]


def test_an_answer_that_cannot_be_read_is_the_upstreams_fault() -> None:
    assert decoded("predictor", lambda: 3) == 3

    def fails() -> int:
        raise InvalidInput("bad tensor")

    with pytest.raises(UpstreamProtocolError, match="the predictor's answer cannot be read"):
        decoded("predictor", fails)


def test_json_bodies_and_what_cannot_be_one() -> None:
    import numpy as np

    assert json_body({"instances": np.array([1, 2])}) == b'{"instances":[1,2]}'
    with pytest.raises(InferenceError, match="cannot be encoded as JSON"):
        json_body({"x": object()})


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        (b"\xff", InvalidInput, "this body is not JSON"),
        ("text", InvalidInput, "not string"),
        (None, InvalidInput, "not null"),
        ([1], InvalidInput, "not array"),
        ({"instances": [1]}, InferenceError, "Shaping"),
        (object(), InferenceError, "not a object"),
    ],
)
def test_payloads_no_hop_takes(payload: object, error: type[Exception], words: str) -> None:
    found = unsupported_payload(payload)
    assert type(found) is error
    assert words in str(found)


def test_retry_after_values() -> None:
    assert retry_after("2.5") == 2.5
    assert retry_after("-3") == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    later = retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60)))
    assert later is not None
    assert 50 < later <= 60
