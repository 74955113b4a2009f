"""Both transports against MLServer, a third-party Open Inference Protocol server, serving a
small scikit-learn model trained here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from gateway import InferInput, InferRequest, InferResponse
from gateway.errors import UpstreamStatusError
from gateway.hops.base import Hop
from gateway.hops.grpc import GrpcHop
from gateway.hops.rest import RestHop
from gateway.hops.settings import HopSettings
from gateway.hops.shaping import Shaping
from gateway.passthrough import Passthrough
from tests.hops.upstreams import free_port

MODEL = "iris"
STARTUP_TIMEOUT = 90.0
# Two features; the label is the first one.
FEATURES = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0, 0.2], [1, 0.8]], dtype=np.float64)
LABELS = np.array([0, 1, 0, 1, 0, 1])
# Without care, about one request in five after a 500 met a reset connection.
ERROR_ROUNDS = 20


@dataclass(frozen=True)
class MLServer:
    http: str
    grpc: str
    model: LogisticRegression


def _mlserver_command() -> list[str]:
    # The console script next to this interpreter: MLServer has no `python -m mlserver`.
    script = Path(sys.executable).with_name("mlserver")
    if not script.exists():
        pytest.fail(f"MLServer is not installed next to {sys.executable} (the test extra has it)")
    return [str(script), "start", "."]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    directory = tmp_path_factory.mktemp("mlserver")
    model = LogisticRegression().fit(FEATURES, LABELS)
    joblib.dump(model, directory / "model.joblib")
    http_port, grpc_port = free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,  # no metrics server (and its port)
        "parallel_workers": 0,  # the model runs in the server process: quicker to start
        "debug": False,
    }
    model_settings = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
        # Declared, so that a gateway in front checks requests against them.
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 2]}],
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model-settings.json").write_text(json.dumps(model_settings))
    log = (directory / "mlserver.log").open("w")
    process = subprocess.Popen(
        _mlserver_command(),
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        ready = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready"
        while not _ready(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MLServer did not start:\n{(directory / 'mlserver.log').read_text()}")
            time.sleep(0.2)
        yield MLServer(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", model)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()


def settings(host: str, protocol: str, **options: Any) -> HopSettings:
    # MLServer has no binary extension: REST bodies go as JSON.
    options.setdefault("model_name", MODEL)
    return HopSettings(
        role="predictor", host=host, protocol=protocol, rest_format="json", **options
    )


@pytest.fixture(params=["v2", "grpc-v2"])
async def hop(request: pytest.FixtureRequest, mlserver: MLServer) -> AsyncIterator[Hop]:
    if request.param == "v2":
        transport: Hop = RestHop(settings(mlserver.http, "v2"))
    else:
        transport = GrpcHop(settings(mlserver.grpc, "grpc-v2"))
    async with transport:
        yield transport


def features_request(raw: bool = False) -> InferRequest:
    tensor = InferInput("features", list(FEATURES.shape), "FP64")
    tensor.set_data_from_numpy(FEATURES)
    request = InferRequest(MODEL, [tensor], request_id="req-1")
    if raw:  # as if it had arrived with the binary extension
        body, length = request.rest_body(True)
        request = InferRequest.from_bytes(body, length, MODEL)
    return request


async def test_infer(hop: Hop, mlserver: MLServer) -> None:
    response = await hop.infer(features_request(), {})
    assert isinstance(response, InferResponse)
    assert response.model_name == MODEL
    [output] = response.outputs
    assert output.name == "predict"
    assert output.as_numpy().ravel().tolist() == mlserver.model.predict(FEATURES).tolist()


async def test_raw_tensors_go_as_json_over_rest(mlserver: MLServer) -> None:
    async with RestHop(settings(mlserver.http, "v2")) as hop:
        response = await hop.infer(features_request(raw=True), {})
        assert not hop.accepts_passthrough("v2", binary=True)
    expected = mlserver.model.predict(FEATURES).tolist()
    assert response.outputs[0].as_numpy().ravel().tolist() == expected


async def test_v1_instances(hop: Hop, mlserver: MLServer) -> None:
    answer = await Shaping(hop, MODEL).infer({"instances": FEATURES.tolist()}, {})
    expected = mlserver.model.predict(FEATURES).tolist()
    assert np.array(answer["predictions"]).ravel().tolist() == expected


async def test_passthrough(mlserver: MLServer) -> None:
    body, _ = features_request().rest_body(False)
    async with RestHop(settings(mlserver.http, "v2")) as rest:
        answer = await rest.infer(Passthrough("v2", MODEL, body), {})
    assert orjson.loads(answer.body)["model_name"] == MODEL
    async with GrpcHop(settings(mlserver.grpc, "grpc-v2")) as grpc_hop:
        grpc_body = features_request().to_grpc_bytes()
        grpc_answer = await grpc_hop.infer(Passthrough("grpc-v2", MODEL, grpc_body), {})
    assert InferResponse.from_grpc_bytes(grpc_answer.body).model_name == MODEL


async def test_unknown_model_is_a_404(mlserver: MLServer) -> None:
    rest = RestHop(settings(mlserver.http, "v2", model_name="nope"))
    grpc_hop = GrpcHop(settings(mlserver.grpc, "grpc-v2", model_name="nope"))
    for hop in (rest, grpc_hop):
        async with hop:
            with pytest.raises(UpstreamStatusError) as info:
                await hop.infer(features_request(), {})
        assert info.value.status == 404
        assert "nope" in str(info.value)


def three_features() -> InferRequest:
    """A request the model raises on (it takes two features)."""
    three = InferInput("features", [1, 3], "FP64")
    three.set_data_from_numpy(np.zeros((1, 3)))
    return InferRequest(MODEL, [three])


async def test_model_error_passes_through(hop: Hop) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await hop.infer(three_features(), {})
    assert info.value.status == 500
    if isinstance(hop, GrpcHop):
        assert "3 features" in str(info.value)
    else:  # MLServer's REST answer names no cause when not in debug mode
        assert str(info.value) == "Internal Server Error"


async def test_the_request_after_a_server_error_is_answered(mlserver: MLServer) -> None:
    # MLServer (uvicorn) closes the connection a moment after its 500 for a model that
    # raised, though the 500 did not say so: a request sent on it meanwhile would be reset.
    expected = mlserver.model.predict(FEATURES).tolist()
    async with RestHop(settings(mlserver.http, "v2")) as hop:
        for _ in range(ERROR_ROUNDS):
            with pytest.raises(UpstreamStatusError):
                await hop.infer(three_features(), {})
            response = await hop.infer(features_request(), {})
            assert response.outputs[0].as_numpy().ravel().tolist() == expected


async def test_ready(hop: Hop) -> None:
    assert await hop.ready() is True
    assert await hop.ready(MODEL) is True
    assert await hop.ready("nope") is False
