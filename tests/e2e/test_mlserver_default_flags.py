"""A gateway with default flags (no protocol, no format: both learned) in front of a real
MLServer serving scikit-learn, REST and gRPC, and a chain of two gateways in front of it:
tritonclient clients, binary and JSON, get the model's own answers; metadata is MLServer's;
bad input is refused at the door with a 400 / INVALID_ARGUMENT naming the problem, and the
next good request is answered."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from gateway._proto import SERVICE_NAME, pb
from tests.e2e.support import start_servers, wait_ready
from tests.hops.test_hop_mlserver import FEATURES, MODEL, MLServer, mlserver
from tests.server.procs import ServerProcess

__all__ = ["mlserver"]  # the fixture, shared with the hop tests


@dataclass(frozen=True)
class Front:
    mlserver: MLServer
    # "rest": a gateway to MLServer's REST port; "grpc": to its gRPC port; "chain": a
    # gateway in front of the "rest" one.
    gateways: dict[str, ServerProcess]


@pytest.fixture(scope="module")
def front(mlserver: MLServer) -> Iterator[Front]:
    def serve(predictor: str) -> list[str]:
        return ["gateway", "serve", "--model_name", MODEL, "--predictor_host", predictor,
                "--http_port", "0", "--grpc_port", "0"]  # fmt: skip

    with ExitStack() as stack:
        rest, grpc_gateway = start_servers(stack, serve(mlserver.http), serve(mlserver.grpc))
        (chain,) = start_servers(stack, serve(f"127.0.0.1:{rest.http_port}"))
        gateways = {"rest": rest, "grpc": grpc_gateway, "chain": chain}
        for gateway in gateways.values():
            # Each gateway asks MLServer what it speaks as it starts; on a loaded machine
            # MLServer may take longer than the gateway waits (the request is then answered
            # 503, retryable): the tests start once every gateway has its answer.
            wait_ready(gateway, 60, path=f"/v2/models/{MODEL}")
        yield Front(mlserver, gateways)


def expected(front: Front) -> list[int]:
    return [int(label) for label in front.mlserver.model.predict(FEATURES)]


@pytest.mark.parametrize("gateway", ["rest", "grpc", "chain"])
@pytest.mark.parametrize("binary", [True, False])
def test_http_clients_get_the_models_answers(front: Front, gateway: str, binary: bool) -> None:
    server = front.gateways[gateway]
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        tensor = triton_http.InferInput("features", list(FEATURES.shape), "FP64")
        tensor.set_data_from_numpy(FEATURES, binary_data=binary)
        output = triton_http.InferRequestedOutput("predict", binary_data=binary)
        result = client.infer(MODEL, [tensor], outputs=[output])
    assert result.as_numpy("predict").ravel().tolist() == expected(front)


@pytest.mark.parametrize("gateway", ["rest", "grpc", "chain"])
def test_grpc_clients_get_the_models_answers(front: Front, gateway: str) -> None:
    server = front.gateways[gateway]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        tensor = triton_grpc.InferInput("features", list(FEATURES.shape), "FP64")
        tensor.set_data_from_numpy(FEATURES)
        result = client.infer(MODEL, [tensor])
    assert result.as_numpy("predict").ravel().tolist() == expected(front)


def test_each_gateway_learned_what_its_predictor_speaks(front: Front) -> None:
    """What each gateway logged it found: MLServer speaks no binary; a gateway does."""
    rest, grpc_gateway = front.gateways["rest"], front.gateways["grpc"]
    chain = front.gateways["chain"]
    found = {name: _found(server) for name, server in front.gateways.items()}
    assert "speaks v2" in found["rest"], rest.output()
    assert "binary tensor data" not in found["rest"]
    assert "speaks grpc-v2" in found["grpc"], grpc_gateway.output()
    # The chain's hop to the first gateway: binary, as that gateway lists the extension.
    assert "speaks v2" in found["chain"], chain.output()
    assert "binary tensor data" in found["chain"]


def _found(server: ServerProcess) -> str:
    lines = [line for line in server.output().splitlines() if "hop predictor:" in line]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("gateway", ["rest", "grpc", "chain"])
def test_model_metadata_is_mlservers(front: Front, gateway: str) -> None:
    server = front.gateways[gateway]
    theirs = _get_json(f"http://{front.mlserver.http}/v2/models/{MODEL}")
    ours = _get_json(f"{server.base_url}/v2/models/{MODEL}")
    if gateway == "grpc":  # gRPC has no empty map apart from none
        theirs = {key: value for key, value in theirs.items() if value != {}}
    assert ours == theirs
    assert ours["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 2]}]
    with (
        triton_grpc.InferenceServerClient(front.mlserver.grpc) as mlserver_client,
        triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client,
    ):
        assert client.get_model_metadata(MODEL) == mlserver_client.get_model_metadata(MODEL)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


# Bad input: refused at the door, the next good request answered.

GOOD = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 2], "data": [0, 1]}]}


def _with(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**GOOD["inputs"][0], **changes}]}


BAD_JSON = [
    (_with(data=[0, 1, 1]), "tensor 'features': data has 3 elements, but shape [1, 2] needs 2"),
    (_with(datatype="FP65"), "FP65"),
    (_with(shape=[1, -2]), "tensor 'features'"),
    (_with(name="other"), "tensor 'other': the model has no such input (it takes 'features')"),
    (_with(datatype="INT64"), "tensor 'features': datatype INT64, but the model takes FP64"),
    (
        _with(shape=[2, 1]),
        "tensor 'features': shape [2, 1] does not fit the model's [-1, 2] (-1: any size)",
    ),
    ({"outputs": []}, "inputs"),
]


@pytest.mark.parametrize("gateway", ["rest", "chain"])
@pytest.mark.parametrize(("body", "message"), BAD_JSON)
def test_bad_json_is_refused_naming_the_problem(
    front: Front, gateway: str, body: dict[str, Any], message: str
) -> None:
    url = f"{front.gateways[gateway].base_url}/v2/models/{MODEL}/infer"
    status, answer = _post(url, json.dumps(body).encode(), {})
    assert status == 400, answer
    assert message in answer["error"]
    assert _post(url, json.dumps(GOOD).encode(), {})[0] == 200


def test_binary_sizes_that_do_not_add_up_are_refused(front: Front) -> None:
    url = f"{front.gateways['chain'].base_url}/v2/models/{MODEL}/infer"
    declared = {"name": "features", "datatype": "FP64", "shape": [1, 2]}
    tensor = {**declared, "parameters": {"binary_data_size": 16}}
    header = json.dumps({"inputs": [tensor]}).encode()
    short = np.zeros(1, "<f8").tobytes()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    status, answer = _post(url, header + short, headers)
    assert status == 400, answer
    assert "features" in answer["error"]
    too_long = {"Inference-Header-Content-Length": str(len(header) + 100)}
    status, answer = _post(url, header + short, too_long)
    assert status == 400, answer
    body = header + np.array([0.0, 1.0], "<f8").tobytes()
    assert _post(url, body, headers)[0] == 200


def test_an_unknown_model_is_not_found(front: Front) -> None:
    url = f"{front.gateways['rest'].base_url}/v2/models/nope/infer"
    assert _post(url, json.dumps(GOOD).encode(), {})[0] == 404


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read()[: _json_end(response)])
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _json_end(response: Any) -> int | None:
    length = response.headers.get("Inference-Header-Content-Length")
    return None if length is None else int(length)


def _grpc_request(**changes: Any) -> bytes:
    tensor: dict[str, Any] = {"name": "features", "datatype": "FP64", "shape": ["1", "2"]}
    tensor["contents"] = {"fp64_contents": [0.0, 1.0]}
    tensor.update(changes)
    message = json_format.ParseDict(
        {"model_name": MODEL, "inputs": [tensor]}, service_pb2.ModelInferRequest()
    )
    return bytes(message.SerializeToString())


BAD_GRPC = [
    (_grpc_request(contents={"fp64_contents": [0.0]}), "data has 1 elements"),
    (_grpc_request(datatype="FP65"), "FP65"),
    (_grpc_request(name="other"), "the model has no such input"),
    (_grpc_request(shape=["2", "1"]), "does not fit the model's [-1, 2]"),
]


@pytest.mark.parametrize("gateway", ["grpc", "chain"])
@pytest.mark.parametrize(("data", "message"), BAD_GRPC)
def test_bad_grpc_is_refused_naming_the_problem(
    front: Front, gateway: str, data: bytes, message: str
) -> None:
    target = f"127.0.0.1:{front.gateways[gateway].grpc_port}"
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            infer(data, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (info.value.details() or "")
        answer = pb.ModelInferResponse.FromString(infer(_grpc_request(), timeout=10))
    assert answer.model_name == MODEL
