"""Graphs over real upstreams on 127.0.0.1: our own server as a REST v1, REST v2 and gRPC
predictor, each step a real hop (retries, deadline, tracing). KServe's documented example
graphs, written for these models: a model chainer, an ensemble, a switch on a field, a canary
splitter; Hard and Soft failures with the upstream's own statuses; one trace across steps."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from gateway import InferInput, InferOutput, InferRequest, InferResponse
from gateway.errors import UpstreamStatusError, UpstreamTimeout, http_status
from gateway.graph import Graph, NoRouteMatched
from gateway.model import Model
from tests.graph.support import hops_for, in_memory_tracer, request, spec
from tests.hops.upstreams import serve_grpc, serve_rest
from tests.models import SlowModel


class Scale(Model):
    """v1: each of ``instances`` (or a previous step's ``predictions``) times `factor`;
    v2: each input times `factor`, as an output named after the model."""

    def __init__(self, name: str, factor: float) -> None:
        super().__init__(name)
        self.factor = factor
        self.ready = True
        self.headers: list[dict[str, str]] = []

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.headers.append(dict(headers or {}))
        if isinstance(payload, InferRequest):
            outputs = []
            for tensor in payload.inputs:
                out = InferOutput(f"{tensor.name}", tensor.shape, tensor.datatype)
                out.set_data_from_numpy(tensor.as_numpy() * np.float32(self.factor))
                outputs.append(out)
            return InferResponse(payload.id or "", self.name, outputs)
        values = payload.get("instances", payload.get("predictions"))
        return {"predictions": [value * self.factor for value in values]}


class Animal(Model):
    """v1: answers which model it is, for a Switch or a Splitter to be seen choosing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        return {"predictions": [self.name]}


class Busy(Model):
    """Answers 503 to the first `failures` calls, then works."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.ready = True
        self.failures = failures
        self.calls = 0

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise UpstreamStatusError("busy, try again", status=503)
        return {"predictions": ["recovered"]}


@dataclass
class Upstreams:
    rest: str
    grpc: str
    models: dict[str, Model]

    def v1(self, model: str) -> str:
        return f"http://{self.rest}/v1/models/{model}:predict"

    def v2(self, model: str) -> str:
        return f"http://{self.rest}/v2/models/{model}/infer"

    def grpc_url(self, model: str) -> str:
        return f"grpc://{self.grpc}/{model}"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    models: list[Model] = [
        Scale("double", 2), Scale("triple", 3), Animal("dog"), Animal("cat"),
        Animal("stable"), Animal("canary"), Busy("busy", 10**9), Busy("flaky", 1),
        SlowModel("slow", delay=60),
    ]  # fmt: skip
    async with serve_rest(models) as rest, serve_grpc(models) as grpc:
        yield Upstreams(rest, grpc, {model.name: model for model in models})


@pytest.fixture
async def closing() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def served(
    text: str, services: dict[str, str], closing: AsyncExitStack, **options: Any
) -> Graph:
    rng = options.pop("rng", None)
    graph_spec = spec(text, services)
    graph = Graph(graph_spec, hops_for(graph_spec, **options), rng=rng)
    closing.push_async_callback(graph.aclose)
    return graph


def fp32(values: list[float]) -> InferRequest:
    """A v2 request as it arrives in binary (REST's extension, or gRPC raw contents)."""
    data = np.array(values, dtype=np.float32).tobytes()
    return InferRequest("g", [InferInput.from_raw("x", [len(values)], "FP32", data)], "req-42")


async def test_model_chainer_over_rest_v1(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    graph = await served(
        """
        nodes:
          root:
            routerType: Sequence
            steps:
            - {serviceName: first}
            - {serviceName: second, data: $response}
        """,
        {"first": upstreams.v1("double"), "second": upstreams.v1("triple")},
        closing,
    )
    assert await graph.infer({"instances": [1, 2]}, {}) == {"predictions": [6, 12]}


@pytest.mark.parametrize(
    ("first", "second"),
    [("v2", "grpc_url"), ("grpc_url", "v2"), ("grpc_url", "grpc_url"), ("v2", "v2")],
)
async def test_model_chainer_bridges_rest_v2_and_grpc(
    upstreams: Upstreams, closing: AsyncExitStack, first: str, second: str
) -> None:
    """A v2 request down a chain of REST v2 and gRPC steps: each step's outputs are the next
    one's inputs; NaN survives every hop (it could not through JSON)."""
    graph = await served(
        """
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: a}, {serviceName: b, data: $response}]
        """,
        {"a": getattr(upstreams, first)("double"), "b": getattr(upstreams, second)("triple")},
        closing,
    )
    response = await graph.infer(fp32([1.5, float("nan"), -2.0]), {})
    assert isinstance(response, InferResponse)
    assert response.id == "req-42"
    [output] = response.outputs
    assert output.name == "x"
    np.testing.assert_array_equal(output.as_numpy(), np.array([9.0, np.nan, -12.0], np.float32))


ENSEMBLE = """
nodes:
  root:
    routerType: Ensemble
    steps:
    - {name: rest, serviceName: rest}
    - {name: grpc, serviceName: grpc}
    - {serviceName: third}
"""


async def test_ensemble_over_rest_and_grpc_is_one_v2_response(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    graph = await served(
        ENSEMBLE,
        {
            "rest": upstreams.v2("double"),
            "grpc": upstreams.grpc_url("triple"),
            "third": upstreams.grpc_url("double"),
        },
        closing,
    )
    response = await graph.infer(fp32([1.0, 2.0]), {})
    assert isinstance(response, InferResponse)
    assert {o.name: o.as_numpy().tolist() for o in response.outputs} == {
        "rest.x": [2.0, 4.0],
        "grpc.x": [3.0, 6.0],
        "2.x": [2.0, 4.0],
    }


async def test_ensemble_of_v1_predictors_is_keyed_by_step(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    graph = await served(
        ENSEMBLE,
        {"rest": upstreams.v1("double"), "grpc": upstreams.v1("triple"),
         "third": upstreams.v1("missing")},
        closing,
    )  # fmt: skip
    answer = await graph.infer({"instances": [1]}, {})
    error = answer.pop("2")["error"]
    assert answer == {"rest": {"predictions": [2]}, "grpc": {"predictions": [3]}}
    # A Soft step's failure: its own message (our server's 404, with what was called), as
    # KServe keys it.
    assert error.startswith("the third answered 404 to POST http://")
    assert ":predict: model 'missing' does not exist (does it serve the model" in error


SWITCH = """
nodes:
  root:
    routerType: Switch
    steps:
    - {serviceName: dog, condition: "[@this].#(instances.0.animal==dog)"}
    - {serviceName: cat, condition: 'instances.#(animal=="cat")'}
"""


async def test_switch_on_a_field(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    """KServe's switch on a request field (an unquoted string, then a quoted one)."""
    graph = await served(SWITCH, {"dog": upstreams.v1("dog"), "cat": upstreams.v1("cat")}, closing)
    assert await graph.infer({"instances": [{"animal": "dog"}]}, {}) == {"predictions": ["dog"]}
    assert await graph.infer({"instances": [{"animal": "cat"}]}, {}) == {"predictions": ["cat"]}
    with pytest.raises(NoRouteMatched):
        await graph.infer({"instances": [{"animal": "cow"}]}, {})


async def test_switch_on_a_tensor(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    """A v2 request routed on its data, to a gRPC predictor or a REST v2 one."""
    graph = await served(
        """
        nodes:
          root:
            routerType: Switch
            steps:
            - {serviceName: big, condition: "[@this].#(inputs.0.data.0>10)"}
            - {serviceName: small, condition: "inputs"}
        """,
        {"big": upstreams.grpc_url("double"), "small": upstreams.v2("triple")},
        closing,
    )
    big = await graph.infer(fp32([20.0]), {})
    small = await graph.infer(fp32([2.0]), {})
    assert (big.outputs[0].as_numpy().tolist(), small.outputs[0].as_numpy().tolist()) == (
        [40.0],
        [6.0],
    )


async def test_canary_splitter_shares(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    """KServe's canary: 90/10 over two predictors, 300 seeded requests, within four
    standard deviations."""
    graph = await served(
        """
        nodes:
          root:
            routerType: Splitter
            steps: [{serviceName: stable, weight: 90}, {serviceName: canary, weight: 10}]
        """,
        {"stable": upstreams.v1("stable"), "canary": upstreams.v1("canary")},
        closing,
        rng=random.Random(5),
    )
    total = 300
    answers = [(await graph.infer({"instances": [i]}, {}))["predictions"][0] for i in range(total)]
    sigma = (total * 0.1 * 0.9) ** 0.5
    assert abs(answers.count("canary") - total * 0.1) < 4 * sigma
    assert answers.count("stable") + answers.count("canary") == total


HARD_THEN_SOFT = """
nodes:
  root:
    routerType: Sequence
    steps:
    - {{serviceName: first, dependency: {dependency}}}
    - {{serviceName: second}}
"""


async def test_hard_step_status_is_the_graphs(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    """A 503 from a Hard step reaches the client as a 503 (KServe's router: 500)."""
    graph = await served(
        HARD_THEN_SOFT.format(dependency="Hard"),
        {"first": upstreams.v1("busy"), "second": upstreams.v1("dog")},
        closing,
    )
    with pytest.raises(UpstreamStatusError) as info:
        await graph.infer({"instances": [1]}, {})
    assert http_status(info.value) == 503
    assert "busy, try again" in str(info.value)


async def test_soft_step_failure_lets_the_sequence_go_on(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    graph = await served(
        HARD_THEN_SOFT.format(dependency="Soft"),
        {"first": upstreams.grpc_url("busy"), "second": upstreams.v1("dog")},
        closing,
    )
    assert await graph.infer({"instances": [1]}, {}) == {"predictions": ["dog"]}


async def test_each_step_retries(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    graph = await served(
        "nodes: {root: {routerType: Sequence, steps: [{serviceName: flaky, dependency: Hard}]}}",
        {"flaky": upstreams.v1("flaky")},
        closing,
        retries=2,
    )
    assert await graph.infer({"instances": [1]}, {}) == {"predictions": ["recovered"]}
    assert upstreams.models["flaky"].calls == 2  # type: ignore[attr-defined]


async def test_hard_failure_cancels_a_slow_sibling(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    graph = await served(
        """
        nodes:
          root:
            routerType: Ensemble
            steps:
            - {name: slow, serviceName: slow}
            - {name: busy, serviceName: busy, dependency: Hard}
        """,
        {"slow": upstreams.grpc_url("slow"), "busy": upstreams.v1("busy")},
        closing,
    )
    with pytest.raises(UpstreamStatusError) as info:
        # Bounded: without the cancel, the slow step would hold the answer for 60 s.
        await asyncio.wait_for(graph.infer({"instances": [1]}, {}), 10)
    assert http_status(info.value) == 503


async def test_steps_share_the_requests_deadline(
    upstreams: Upstreams, closing: AsyncExitStack
) -> None:
    graph = await served(
        """
        nodes:
          root:
            routerType: Ensemble
            steps:
            - {serviceName: rest, dependency: Hard}
            - {serviceName: grpc, dependency: Hard}
        """,
        {"rest": upstreams.v1("slow"), "grpc": upstreams.grpc_url("slow")},
        closing,
    )
    with request(deadline=time.monotonic() + 0.5), pytest.raises(UpstreamTimeout) as info:
        await asyncio.wait_for(graph.infer({"instances": [1]}, {}), 10)
    assert http_status(info.value) == 504


async def test_one_trace_across_every_step(upstreams: Upstreams, closing: AsyncExitStack) -> None:
    """Node and step spans, each hop's CLIENT span, and the trace context every upstream
    received (REST v1, REST v2, gRPC) share one trace id."""
    tracer, exporter = in_memory_tracer()
    graph = await served(
        """
        nodes:
          root:
            routerType: Sequence
            steps:
            - {name: v1, serviceName: v1}
            - {name: both, nodeName: both}
          both:
            routerType: Ensemble
            steps: [{name: v2, serviceName: v2}, {name: grpc, serviceName: grpc}]
        """,
        {"v1": upstreams.v1("double"), "v2": upstreams.v2("triple"),
         "grpc": upstreams.grpc_url("double")},
        closing,
        tracer=tracer,
    )  # fmt: skip
    for model in ("double", "triple"):
        upstreams.models[model].headers.clear()  # type: ignore[attr-defined]
    with request(tracer), tracer.start_as_current_span("predict") as root:
        await graph.infer({"instances": [1.0]}, {})
    trace_id = root.get_span_context().trace_id
    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {trace_id}
    names = sorted(span.name for span in spans)
    assert names == sorted([
        "predict", "node root", "step root.v1", "step root.both", "node both", "step both.v2",
        "step both.grpc", "hop v1", "hop v2", "hop grpc",
    ])  # fmt: skip
    received = [
        headers["traceparent"]
        for model in ("double", "triple")
        for headers in upstreams.models[model].headers  # type: ignore[attr-defined]
    ]
    assert len(received) == 3
    assert {value.split("-")[1] for value in received} == {f"{trace_id:032x}"}
