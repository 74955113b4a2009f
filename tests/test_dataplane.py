"""The protocol-neutral core both doors adapt (gateway.dataplane)."""

from __future__ import annotations

import pytest

from gateway.dataplane import DataPlane
from gateway.errors import ModelNotFound, ModelNotReady, Overloaded
from gateway.hops.mock import MockHop
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.model import InferenceVerb, Model
from gateway.model_repository import ModelRepository
from gateway.predictor_config import PredictorConfig
from gateway.tensor import InferInput, InferOutput, RequestedOutput


class Transformer(Model):
    async def preprocess(self, payload: object, headers: object = None) -> object:
        return payload


def plane(*models: Model) -> DataPlane:
    repository = ModelRepository()
    for model in models:
        model.ready = True
        repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    return dataplane


def test_a_body_passes_through_only_a_model_that_only_forwards() -> None:
    forwarder, transformer, bare = Model("f"), Transformer("t"), Model("b")
    forwarder.predictor_hop = MockHop(protocol="v2")
    transformer.predictor_hop = MockHop(protocol="v2")
    forwarder.predictor_hop.accepts_passthrough = lambda protocol, binary: protocol == "v2"  # type: ignore[method-assign]
    dataplane = plane(forwarder, transformer, bare)
    predict = InferenceVerb.PREDICT
    assert dataplane.passthrough("f", "v2", False, predict)
    assert not dataplane.passthrough("f", "v1", False, predict), "the hop speaks v2"
    assert not dataplane.passthrough("f", "v2", False, InferenceVerb.EXPLAIN)
    assert not dataplane.passthrough("t", "v2", False, predict), "it transforms"
    assert not dataplane.passthrough("b", "v2", False, predict), "it has no predictor"
    assert not dataplane.passthrough("nope", "v2", False, predict)


async def test_readiness_includes_the_predictors_when_the_health_check_is_on() -> None:
    model = Model("m")
    hop = MockHop(ready=False)
    model.predictor_hop = hop
    dataplane = plane(model)
    assert await dataplane.ready() is True, "the check is off"
    model.predictor_config = PredictorConfig("h:1", predictor_health_check=True)
    assert await dataplane.ready() is False
    assert await dataplane.model_ready("m") is False
    hop.is_ready = True
    assert await dataplane.ready() is True
    assert await dataplane.model_ready("m") is True
    dataplane.draining = True
    assert await dataplane.ready() is False


async def test_an_answer_goes_back_as_the_client_asked() -> None:
    model = Model("m")
    output = InferOutput("y", [1], "FP32", data=[1.0])
    model.predictor_hop = MockHop(lambda payload, headers: InferResponse("", "", [output]))
    dataplane = plane(model)
    request = InferRequest(
        "m",
        [InferInput("x", [1], "FP32", data=[1.0])],
        request_id="r",
        parameters={"binary_data_output": True},
        request_outputs=[RequestedOutput("y")],
    )
    result = await dataplane.infer("m", request, {}, {})
    assert isinstance(result, InferResponse)
    assert (result.id, result.model_name) == ("r", "m")
    assert result.use_binary_outputs is True
    assert result.requested_outputs == [RequestedOutput("y")]


async def test_unknown_unready_and_overloaded() -> None:
    model = Model("m")
    dataplane = plane(model)
    with pytest.raises(ModelNotFound):
        await dataplane.infer("nope", {}, {}, {})
    model.ready = False
    with pytest.raises(ModelNotReady):
        await dataplane.infer("m", {}, {}, {})
    dataplane.max_concurrency = 1
    with dataplane.admitted():
        assert dataplane.in_flight == 1
        with pytest.raises(Overloaded), dataplane.admitted():
            pass
    assert dataplane.in_flight == 0


async def test_repository_index_load_and_unload() -> None:
    dataplane = plane(Model("m"))
    assert await dataplane.repository_index() == [{"name": "m", "state": "READY"}]
    await dataplane.unload("m")
    assert await dataplane.repository_index() == [
        {"name": "m", "state": "UNAVAILABLE", "reason": "not loaded"}
    ]
    assert await dataplane.repository_index(ready_only=True) == []
    await dataplane.load("m")
    assert await dataplane.model_ready("m") is True
