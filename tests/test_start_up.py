"""What a newcomer sees when a gateway starts with no predictor: a real ``gateway serve``
process says where it listens and what it is called, warns that inference will answer 501 (as
KServe's does), says "ready" once it is, answers 501 on REST and UNIMPLEMENTED on gRPC saying
what to do, and writes one access line per gRPC call."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.server.procs import ServerProcess, run_server, wait_until

BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
)
NO_PREDICTOR = (
    "model 'iris' has no predictor: start the gateway with --predictor_host HOST:PORT, "
    "or give the model a predict() of its own"
)


@pytest.fixture(scope="module")
def bare() -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OTEL_SERVICE_NAME", raising=False)
        with run_server(
            "gateway", "serve", "--model_name", "iris", "--http_port", "0", "--grpc_port", "0"
        ) as server:
            wait_until(lambda: "ready: iris" in server.output(), timeout=30)
            yield server


def test_the_log_says_where_it_listens_what_it_is_and_why_it_cannot_predict(
    bare: ServerProcess,
) -> None:
    out = bare.output()
    assert (
        f"listening: REST on {bare.http_port}, gRPC on {bare.grpc_port}, address 127.0.0.1 "
        "(service iris-proxy)"
    ) in out
    assert (
        "WARNING gateway.hops: model iris has no predictor (--predictor_host HOST:PORT) and no "
        "predict() of its own: its inference requests will answer 501"
    ) in out
    # Ready is said once the server is, after the models loaded.
    assert out.index("loaded: iris") < out.index("ready: iris")
    assert "not ready yet" not in out


def test_rest_answers_501_saying_what_to_do(bare: ServerProcess) -> None:
    request = urllib.request.Request(f"{bare.base_url}/v2/models/iris/infer", data=BODY)
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=10)
    assert failed.value.code == 501
    assert orjson.loads(failed.value.read()) == {"error": NO_PREDICTOR}
    assert failed.value.headers["server-timing"].startswith('gateway;desc="iris-proxy"')


def test_grpc_answers_unimplemented_and_each_call_has_an_access_line(bare: ServerProcess) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{bare.grpc_port}")
    try:
        assert client.is_model_ready("iris")
        tensor = triton.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        with pytest.raises(InferenceServerException) as failed:
            client.infer("iris", [tensor], request_id="call-7")
    finally:
        client.close()
    assert failed.value.status() == f"StatusCode.{grpc.StatusCode.UNIMPLEMENTED.name}"
    assert failed.value.message() == NO_PREDICTOR
    line = r'127\.0\.0\.1 \[[^]]+\] "gRPC {} iris" {} \d+ \d+\.\d{{6}} request_id={}'
    wait_until(lambda: "request_id=call-7" in bare.output())
    assert re.search(line.format("ModelReady", "OK", "-"), bare.output())
    assert re.search(line.format("ModelInfer", "UNIMPLEMENTED", "call-7"), bare.output())
