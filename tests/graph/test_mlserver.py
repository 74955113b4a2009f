"""Graphs over MLServer (a third-party Open Inference Protocol server) serving a scikit-learn
model: the same predictor reached over REST v2 and gRPC in one Ensemble, and MLServer's REST
JSON answer bridged into a gRPC request to our own server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from gateway import InferInput, InferRequest, InferResponse
from gateway.graph import Graph
from tests.graph.support import hops_for, spec
from tests.hops.test_hop_mlserver import FEATURES, MODEL, MLServer, mlserver  # noqa: F401
from tests.hops.upstreams import serve_grpc
from tests.models import EchoModel


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async with serve_grpc([EchoModel()]) as address:
        yield address


def graph(text: str, services: dict[str, str]) -> Graph:
    graph_spec = spec(text, services)
    # MLServer has no binary extension: REST bodies go as JSON.
    return Graph(graph_spec, hops_for(graph_spec, rest_format="json"))


def features() -> InferRequest:
    tensor = InferInput("features", list(FEATURES.shape), "FP64")
    tensor.set_data_from_numpy(FEATURES)
    return InferRequest("g", [tensor], request_id="iris-1")


async def test_ensemble_over_rest_and_grpc(mlserver: MLServer) -> None:  # noqa: F811
    ensemble = graph(
        """
        nodes:
          root:
            routerType: Ensemble
            steps: [{name: rest, serviceName: rest}, {name: grpc, serviceName: grpc}]
        """,
        {
            "rest": f"http://{mlserver.http}/v2/models/{MODEL}/infer",
            "grpc": f"grpc://{mlserver.grpc}/{MODEL}",
        },
    )
    async with ensemble:
        response = await ensemble.infer(features(), {})
    assert isinstance(response, InferResponse)
    expected = mlserver.model.predict(FEATURES).tolist()
    assert {o.name: o.as_numpy().ravel().tolist() for o in response.outputs} == {
        "rest.predict": expected,
        "grpc.predict": expected,
    }


async def test_rest_json_answer_bridged_into_grpc(mlserver: MLServer, echo: str) -> None:  # noqa: F811
    chain = graph(
        """
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: iris}, {serviceName: echo, data: $response}]
        """,
        {
            "iris": f"http://{mlserver.http}/v2/models/{MODEL}/infer",
            "echo": f"grpc://{echo}/echo",
        },
    )
    async with chain:
        response = await chain.infer(features(), {})
    assert isinstance(response, InferResponse)
    [output] = response.outputs
    assert output.name == "predict"
    np.testing.assert_array_equal(output.as_numpy().ravel(), mlserver.model.predict(FEATURES))
