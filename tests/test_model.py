"""Model.__call__: the preprocess -> predict -> postprocess pipeline, sync or async."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pytest

from gateway import InferInput, InferRequest, InferResponse
from gateway.errors import InvalidInput, Unimplemented, http_status
from gateway.model import InferenceVerb, Model
from gateway.request_context import RequestContext, serving
from tests.models import EchoModel, SyncModel


def _request() -> InferRequest:
    tensor = InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
    return InferRequest("m", [tensor], request_id="r1")


class Doubling(Model):
    """A transformer: doubles inputs on the way in, adds a suffix header on the way out."""

    def __init__(self) -> None:
        super().__init__("doubling", return_response_headers=True)
        self.ready = True
        self.seen: list[str] = []

    async def preprocess(self, payload: Any, headers: Any = None) -> Any:
        self.seen.append("preprocess")
        tensor = payload.inputs[0]
        tensor.set_data_from_numpy(tensor.as_numpy() * 2)
        return payload

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.seen.append("predict")
        response_headers["x-predicted"] = "yes"
        return InferResponse("r1", self.name, [])

    async def postprocess(
        self, result: Any, headers: Any = None, response_headers: Any = None
    ) -> Any:
        self.seen.append("postprocess")
        response_headers["x-post"] = "done"
        return result


async def test_stages_run_in_order_and_fill_response_headers() -> None:
    model = Doubling()
    request = _request()
    out_headers: dict[str, str] = {}
    result = await model(request, {}, response_headers=out_headers)
    assert isinstance(result, InferResponse)
    assert model.seen == ["preprocess", "predict", "postprocess"]
    assert out_headers == {"x-predicted": "yes", "x-post": "done"}
    assert request.inputs[0].as_numpy().tolist() == [2.0, 4.0, 6.0]


async def test_stage_durations_are_recorded_in_the_request_context() -> None:
    context = RequestContext("r1", "v2")
    with serving(context):
        await EchoModel()(_request())
    assert [name for name, _ in context.timings] == ["predict"]
    assert all(seconds >= 0 for _, seconds in context.timings)
    doubling = RequestContext("r2", "v2")
    with serving(doubling):
        await Doubling()(_request(), {}, response_headers={})
    assert [name for name, _ in doubling.timings] == ["preprocess", "predict", "postprocess"]


async def test_sync_handlers_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    class Recording(SyncModel):
        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:  # type: ignore[override]
            threads.append(threading.get_ident())
            return super().predict(payload, headers)

    context = RequestContext("r1", "v2")
    with serving(context):
        result = await Recording()(_request())
    assert isinstance(result, InferResponse)
    assert threads
    assert threads[0] != loop_thread
    # The context reached the worker thread: predict's duration was recorded.
    assert context.stage_seconds("predict") > 0


async def test_explain_verb_calls_explain() -> None:
    result = await EchoModel()({"instances": [1, 2]}, {}, verb=InferenceVerb.EXPLAIN)
    assert result == {"explanations": [1, 2]}


async def test_default_predict_without_predictor_says_so() -> None:
    class Bare(Model):
        pass

    with pytest.raises(Unimplemented, match="no predictor_host") as info:
        await Bare("bare")(_request())
    assert http_status(info.value) == 501  # as KServe's answers


async def test_validate_refuses_non_list_instances() -> None:
    with pytest.raises(InvalidInput, match="instances"):
        await EchoModel()({"instances": "nope"})


async def test_latency_logging_names_every_stage(caplog: pytest.LogCaptureFixture) -> None:
    model = EchoModel()
    model.enable_latency_logging = True
    with (
        caplog.at_level(logging.INFO, logger="gateway.model"),
        serving(RequestContext("abc", "v2")),
    ):
        await model(_request(), {"x-request-id": "abc"})
    line = next(r.getMessage() for r in caplog.records if r.name == "gateway.model")
    for field in ("requestId: abc", "preprocess_ms", "predict_ms", "postprocess_ms"):
        assert field in line
