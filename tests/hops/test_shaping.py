"""`Shaping`: a dict in, a dict out, whatever the upstream speaks; the transport below sees
only an `InferRequest` or a body passed through."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InferenceError, InvalidInput, UpstreamProtocolError
from gateway.hops.base import Headers
from gateway.hops.factory import transport
from gateway.hops.mock import MockHop, echo
from gateway.hops.settings import HopSettings
from gateway.hops.shaping import Shaping
from gateway.infer_request import InferRequest
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.tensor import InferInput


def v1_upstream(answer: bytes) -> MockHop:
    """A v1 transport that answers every body with `answer`."""

    def handler(payload: Any, headers: Headers) -> PassthroughResponse:
        assert isinstance(payload, Passthrough)
        return PassthroughResponse(answer)

    return MockHop(handler, explain_handler=handler, protocol="v1")


async def test_a_dict_goes_to_a_v1_upstream_as_its_json() -> None:
    inner = v1_upstream(b'{"predictions": [[1, 2]]}')
    hop = Shaping(inner, "m")
    payload = {"instances": [[1, 2]], "parameters": {"k": 1}}
    assert await hop.infer(payload, {"x-request-id": "r"}) == {"predictions": [[1, 2]]}
    [call] = inner.calls
    assert call.payload == Passthrough("v1", "m", orjson.dumps(payload))
    assert call.headers == {"x-request-id": "r"}


async def test_a_v1_explainer_takes_any_json() -> None:
    inner = v1_upstream(b'{"explanations": ["a"]}')
    hop = Shaping(inner, "m")
    assert await hop.explain([1, "two"], {}) == {"explanations": ["a"]}
    assert inner.calls[0].payload.body == b'[1,"two"]'
    with pytest.raises(InferenceError, match="cannot be encoded as JSON"):
        await hop.explain({"instances": object()}, {})


async def test_an_answer_that_is_not_json_is_the_upstreams_fault() -> None:
    hop = Shaping(v1_upstream(b"<html>"), "m")
    with pytest.raises(UpstreamProtocolError, match="predictor's answer cannot be read"):
        await hop.infer({"instances": [1]}, {})


async def test_a_dict_goes_to_a_v2_upstream_as_a_request_and_comes_back_in_its_form() -> None:
    inner = MockHop(echo, protocol="grpc-v2")
    hop = Shaping(inner, "upstream")
    answer = await hop.infer({"instances": [[1.5, 2.5]]}, {})
    assert answer == {"predictions": [[1.5, 2.5]]}
    [call] = inner.calls
    assert isinstance(call.payload, InferRequest)
    assert call.payload.model_name == "upstream"
    assert [(t.name, t.datatype, t.shape) for t in call.payload.inputs] == [
        ("input-0", "FP64", [1, 2])
    ]
    tensor = {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}
    v2 = await hop.infer({"id": "a", "inputs": [tensor]}, {})
    assert v2 == {"model_name": "upstream", "id": "a", "outputs": [tensor]}


async def test_a_v2_explainer_gets_a_request() -> None:
    inner = MockHop(explain_handler=lambda payload, headers: {"explained": payload.model_name})
    hop = Shaping(inner, "m")
    assert await hop.explain({"instances": [1]}, {}) == {"explained": "m"}
    with pytest.raises(InvalidInput, match="JSON object"):
        await hop.explain("text", {})


async def test_requests_and_bodies_go_through_untouched() -> None:
    inner = MockHop(lambda payload, headers: payload)
    hop = Shaping(inner, "m")
    request = InferRequest("front", [InferInput("x", [1], "FP32", data=[1.0])])
    body = Passthrough("v2", "front", b"{}")
    assert await hop.infer(request, {}) is request
    assert await hop.infer(body, {}) is body
    assert [call.payload for call in inner.calls] == [request, body]


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        pytest.param({"neither": 1}, InvalidInput, "instances", id="no-instances-or-inputs"),
        pytest.param({"instances": [1], "parameters": 3}, InvalidInput, "parameters", id="params"),
        pytest.param(b"\xff", InvalidInput, "not JSON", id="bytes"),
        pytest.param([1], InvalidInput, "not array", id="list"),
        pytest.param(object(), InferenceError, "not a object", id="object"),
    ],
)
async def test_what_no_hop_takes(payload: Any, error: type[Exception], match: str) -> None:
    inner = MockHop()
    with pytest.raises(error, match=match):
        await Shaping(inner, "m").infer(payload, {})
    assert inner.calls == [], "refused before anything is sent"


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
async def test_a_transport_takes_no_dict(protocol: str) -> None:
    # Nothing listens on port 9 here: the dict is refused before any call is made.
    settings = HopSettings(role="predictor", host="127.0.0.1:9", model_name="m", protocol=protocol)
    async with transport(settings) as bare:
        with pytest.raises(InferenceError, match="Shaping"):
            await bare.infer({"instances": [1]}, {})
