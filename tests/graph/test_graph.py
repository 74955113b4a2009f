"""A graph beyond KServe's router: v2 requests bridged and merged between steps, one deadline
shared by the steps, the graph as a hop a transformer holds, error bodies."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from gateway import InferInput, InferOutput, InferRequest, InferResponse, request_context
from gateway.errors import (
    InvalidInput,
    UnsupportedProtocol,
    UpstreamStatusError,
    UpstreamTimeout,
    http_status,
)
from gateway.graph import Graph, error_body
from gateway.hops.base import Headers
from gateway.hops.mock import MockHop
from gateway.model import Model
from gateway.passthrough import Passthrough
from gateway.tensor import RequestedOutput
from tests.graph.support import (
    NOT_FOUND_BODY,
    answer,
    error_404,
    infer,
    request,
    spec,
    success,
)


def tensor_request() -> InferRequest:
    first = InferInput("x", [2], "FP32")
    first.set_data_from_numpy(np.array([1.5, float("nan")], dtype=np.float32))
    return InferRequest("g", [first], request_id="req-7")


def doubled(request: InferRequest, headers: Headers) -> InferResponse:
    out = InferOutput("y", [2], "FP32")
    out.set_data_from_numpy(request.inputs[0].as_numpy() * 2)
    return InferResponse(request.id or "", "double", [out])


async def test_v2_ensemble_names_outputs_by_step() -> None:
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Ensemble
            steps: [{name: double, serviceName: d}, {name: same, serviceName: e}, {serviceName: f}]
        """),
        {"d": MockHop(doubled), "e": MockHop(), "f": error_404()},
    )
    response = await infer(graph, tensor_request())
    assert isinstance(response, InferResponse)
    assert (response.id, response.model_name) == ("req-7", "g")
    assert [o.name for o in response.outputs] == ["double.y", "same.x"]
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), [3.0, np.nan])
    np.testing.assert_array_equal(response.outputs[1].as_numpy(), [1.5, np.nan])
    assert response.parameters == {"2.error": NOT_FOUND_BODY, "2.status": 404}


async def test_v2_response_becomes_the_next_request() -> None:
    """Bridging: a v2 answer passed on as ``$response`` is a request whose inputs are its
    outputs; bytes that arrived raw stay raw (and NaN stays NaN)."""

    def raw_answer(request: InferRequest, headers: Headers) -> InferResponse:
        data = np.array([[1, 2], [3, 4]], dtype=np.int64)
        out = InferOutput.from_raw("ids", [2, 2], "INT64", data.tobytes())
        return InferResponse(request.id or "", "first", [out, *doubled(request, headers).outputs])

    second = MockHop()
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: a}, {serviceName: b, data: $response}]
        """),
        {"a": MockHop(raw_answer), "b": second},
    )
    response = await infer(graph, tensor_request())
    passed = second.calls[0].payload
    assert isinstance(passed, InferRequest)
    assert (passed.model_name, passed.id) == ("g", "req-7")
    assert [(t.name, t.datatype, t.shape) for t in passed.inputs] == [
        ("ids", "INT64", [2, 2]),
        ("y", "FP32", [2]),
    ]
    assert passed.inputs[0].is_raw
    np.testing.assert_array_equal(passed.inputs[1].as_numpy(), [3.0, np.nan])
    assert [o.name for o in response.outputs] == ["ids", "y"]


async def test_v2_conditions_see_the_rest_json() -> None:
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Switch
            steps:
            - {serviceName: big, condition: 'inputs.#(name=="x").data.#(>1)'}
            - {serviceName: small, condition: "inputs"}
        """),
        {"big": answer("big"), "small": answer("small")},
    )
    assert await infer(graph, tensor_request()) == "big"


# Deadlines


async def test_steps_share_the_request_deadline_capped_per_call() -> None:
    seen: list[float] = []

    def remaining(payload: Any, headers: Headers) -> Any:
        context = request_context.current()
        assert context is not None
        seen.append(context.remaining() or 0.0)
        return {"predictions": []}

    graph = Graph(
        spec("""
        spec:
          routerTimeouts: {serviceClient: 2}
          nodes:
            root: {routerType: Ensemble, steps: [{serviceName: a}, {serviceName: b}]}
        metadata: {name: g}
        apiVersion: serving.kserve.io/v1alpha1
        kind: InferenceGraph
        """),
        {"a": MockHop(remaining), "b": MockHop(remaining)},
    )
    with request(deadline=time.monotonic() + 30):
        await infer(graph, {"instances": [1]})
    # The cap, not the request's 30 s.
    assert len(seen) == 2
    assert all(seconds <= 2 for seconds in seen)
    with request(deadline=time.monotonic() + 1.5):
        await infer(graph, {"instances": [1]})
    # The request's deadline, when it comes before the cap.
    assert all(seconds <= 1.5 for seconds in seen[2:])


async def test_no_step_is_called_once_the_deadline_passed() -> None:
    hop = success()
    graph = Graph(
        spec("nodes: {root: {routerType: Sequence, steps: [{serviceName: a}]}}"), {"a": hop}
    )
    with request(deadline=time.monotonic() - 1), pytest.raises(UpstreamTimeout) as info:
        await infer(graph, {"instances": [1]})
    assert http_status(info.value) == 504
    assert "deadline passed before node 'root' steps[0]" in str(info.value)
    assert not hop.calls


# A graph is a hop


async def test_what_a_graph_takes() -> None:
    graph = Graph(spec("nodes: {root: {routerType: Sequence, steps: [{serviceName: a}]}}"),
                  {"a": success()})  # fmt: skip
    with pytest.raises(UnsupportedProtocol):
        await graph.infer(Passthrough("v2", "g", b"{}"), {})
    with pytest.raises(InvalidInput, match="takes a JSON object or a v2 request, not bytes"):
        await graph.infer(b"not json", {})
    with pytest.raises(UnsupportedProtocol, match="has no explain"):
        await graph.explain({"instances": [1]}, {})


async def test_ready_and_close_every_hop_once() -> None:
    shared, down = success(), MockHop(ready=False)
    graph = Graph(
        spec("""
        nodes:
          root: {routerType: Ensemble, steps: [{serviceName: a}, {serviceName: a}, {nodeName: n}]}
          n: {routerType: Sequence, steps: [{serviceName: b}]}
        """),
        {"a": shared, "b": down},
    )
    assert await graph.ready() is False
    down.is_ready = True
    assert await graph.ready() is True
    await graph.aclose()
    assert shared.closed
    assert down.closed


class Chain(Model):
    """A transformer with custom code between the graph's steps: it calls a graph twice."""

    def __init__(self, graph: Graph) -> None:
        super().__init__("chain")
        self.graph = graph

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        first = await self.graph.infer(payload, headers or {})
        return await self.graph.infer({"instances": first["predictions"][::-1]}, headers or {})


async def test_a_transformer_holds_and_calls_a_graph() -> None:
    graph = Graph(spec("nodes: {root: {routerType: Sequence, steps: [{serviceName: echo}]}}"),
                  {"echo": MockHop()})  # fmt: skip
    assert await Chain(graph)({"instances": [1, 2, 3]}) == {"predictions": [3, 2, 1]}
    model = Model("g")
    model.predictor_hop = graph  # a graph is a hop: the default predict calls it
    assert await model({"instances": [4]}) == {"predictions": [4]}


@pytest.mark.parametrize(
    ("error", "body"),
    [
        # The step's own JSON object, as KServe passes a failed step's body on.
        (UpstreamStatusError(NOT_FOUND_BODY, status=404), {"detail": "Intentional 404 code"}),
        # A body that was not a JSON object (MLServer's "Internal Server Error").
        (UpstreamStatusError("Internal Server Error", status=500),
         {"error": "Internal Server Error"}),
        # A failure of the router's own, in KServe's router's words.
        (UpstreamTimeout("the predictor did not answer within 1.000 s"),
         {"error": "Failed to process request",
          "cause": "the predictor did not answer within 1.000 s"}),
    ],
)  # fmt: skip
def test_error_bodies(error: Any, body: dict[str, Any]) -> None:
    assert error_body(error) == body


async def test_the_answer_to_a_v2_request_is_the_graphs() -> None:
    """The last step's answer, named after the graph the client called (and its version),
    while each step was asked for no output the client asked the graph for."""
    step = MockHop(doubled)
    graph = Graph(
        spec("nodes: {root: {routerType: Sequence, steps: [{serviceName: d}]}}"), {"d": step}
    )
    request = tensor_request()
    request.model_version = "3"
    request.request_outputs = [RequestedOutput("y")]
    response = await infer(graph, request)
    assert isinstance(response, InferResponse)
    assert (response.model_name, response.model_version) == ("g", "3")
    assert response.outputs[0].name == "y"
    assert step.calls[0].payload.request_outputs is None
    assert request.request_outputs == [RequestedOutput("y")]  # the caller's is left alone
