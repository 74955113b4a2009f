"""`MockHop` (hops.mock): a hop with no server behind it, for testing transformers."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import UpstreamUnavailable
from gateway.hops.mock import Call, MockHop, echo
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.tensor import InferInput


def test_echo_answers_as_an_identity_model_and_keeps_raw_bytes() -> None:
    raw = InferInput.from_raw("r", [2], "INT8", b"\x01\x02")
    plain = InferInput("p", [1], "FP32", data=[1.5])
    answer = echo(InferRequest("m", [raw, plain], request_id="i"))
    assert isinstance(answer, InferResponse)
    assert (answer.id, answer.model_name) == ("i", "m")
    first, second = answer.outputs
    assert first.is_raw
    assert bytes(first.wire_bytes()) == b"\x01\x02"
    assert np.array_equal(second.as_numpy(), np.array([1.5], np.float32))
    assert echo({"instances": [1, 2]}) == {"predictions": [1, 2]}
    assert echo(b"other") == b"other"


async def test_calls_are_recorded_with_their_attempt() -> None:
    async def explain(payload: object, headers: object) -> str:
        return "why"

    hop = MockHop(explain_handler=explain)
    assert await hop.infer({"instances": [1]}, {"x-request-id": "r"}) == {"predictions": [1]}
    assert await hop.explain({}, {}) == "why"
    assert await hop.attempt("infer", {"instances": [2]}, {}, 3) == {"predictions": [2]}
    assert hop.calls == [
        Call("infer", {"instances": [1]}, {"x-request-id": "r"}, 1),
        Call("explain", {}, {}, 1),
        Call("infer", {"instances": [2]}, {}, 3),
    ]


async def test_handlers_may_raise_and_readiness_and_closing_are_settable() -> None:
    def down(payload: object, headers: object) -> object:
        raise UpstreamUnavailable("gone")

    hop = MockHop(down, ready=False, name="explainer", protocol="v1")
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    assert (hop.name, hop.protocol) == ("explainer", "v1")
    assert await hop.ready() is False
    async with hop:
        assert not hop.closed
    assert hop.closed
