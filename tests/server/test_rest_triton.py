"""The REST server as tritonclient.http sees it: a real server on 127.0.0.1, Triton's client.

tritonclient.http blocks (gevent), so each call runs in a worker thread while the server runs
on the test's event loop. It sends binary requests with no Content-Type at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias, TypeVar

import numpy as np
import pytest
import tritonclient.http as triton
from aiohttp.test_utils import TestServer
from tritonclient.utils import InferenceServerException

from gateway.dataplane import DataPlane
from gateway.metrics import Metrics
from gateway.model_repository import ModelRepository
from gateway.server.rest import create_app
from gateway.settings import ServerSettings
from tests.models import EchoModel, SyncModel

TENSORS: dict[str, np.ndarray[Any, Any]] = {
    "FP32": np.array([[1.5, -2.0, 3.25], [0.0, 1e-30, 7.0]], dtype=np.float32),
    "INT64": np.array([2**62, -1, 0], dtype=np.int64),
    "BYTES": np.array([b"caf\xc3\xa9", b"two words", b""], dtype=np.object_),
    "FP16": np.array([0.5, -1.0, 65504.0], dtype=np.float16),
    "BOOL": np.array([[True, False], [False, True]], dtype=np.bool_),
}
T = TypeVar("T")
Triton: TypeAlias = triton.InferenceServerClient


class Client:
    """tritonclient.http kept to one worker thread, since gevent's hub belongs to a thread:
    the client is made, used and closed there, off the server's event loop."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Triton | None = None
        self._thread = ThreadPoolExecutor(1)

    async def run(self, call: Callable[[Triton], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, call)

    def _run(self, call: Callable[[Triton], T]) -> T:
        if self._client is None:
            self._client = Triton(url=self._url)
        return call(self._client)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client of a fresh server."""
    repository = ModelRepository()
    down = EchoModel("down")
    down.ready = False
    for model in (EchoModel(), SyncModel(), down):
        repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    app = create_app(dataplane, ServerSettings(listen_address="127.0.0.1"), Metrics())
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    client = Client(f"127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        await client.aclose()
        await server.close()


def infer(
    array: np.ndarray[Any, Any],
    datatype: str,
    binary_in: bool,
    binary_out: bool,
    model: str = "echo",
) -> Callable[[Triton], Any]:
    """An infer call of `array` as input "x", asking for "x" back."""
    tensor = triton.InferInput("x", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary_in)
    output = triton.InferRequestedOutput("x", binary_data=binary_out)
    return lambda client: client.infer(model, [tensor], outputs=[output], request_id="r-1")


async def test_health(client: Client) -> None:
    assert await client.run(lambda c: c.is_server_live())
    # A registered model is down, so the server is not ready.
    assert not await client.run(lambda c: c.is_server_ready())
    assert await client.run(lambda c: c.is_model_ready("echo"))
    assert not await client.run(lambda c: c.is_model_ready("down"))


async def test_metadata(client: Client) -> None:
    server = await client.run(lambda c: c.get_server_metadata())
    assert server["name"] == "inference-hop-gateway"
    assert "binary_tensor_data" in server["extensions"]
    model = await client.run(lambda c: c.get_model_metadata("echo"))
    assert model["name"] == "echo"
    versioned = await client.run(lambda c: c.get_model_metadata("echo", "2"))
    assert versioned["versions"] == ["2"]


# Every datatype, each way in and out; tritonclient sends FP16 only as binary data.
ROUND_TRIPS = [
    (datatype, binary_in, binary_out)
    for datatype in sorted(TENSORS)
    for binary_in in (False, True)
    for binary_out in (False, True)
    if binary_in or datatype != "FP16"
]


@pytest.mark.parametrize(("datatype", "binary_in", "binary_out"), ROUND_TRIPS)
async def test_infer_round_trip(
    client: Client, datatype: str, binary_in: bool, binary_out: bool
) -> None:
    array = TENSORS[datatype]
    result = await client.run(infer(array, datatype, binary_in, binary_out))
    output = result.get_output("x")
    assert output["datatype"] == datatype
    assert ("binary_data_size" in output.get("parameters", {})) is binary_out
    answer = result.as_numpy("x")
    assert answer.shape == array.shape
    if datatype == "BYTES" and not binary_out:
        # JSON carries BYTES as text, which tritonclient hands back as str.
        assert answer.tolist() == [value.decode() for value in array]
    else:
        assert np.array_equal(answer, array)
    assert result.get_response()["id"] == "r-1"


async def test_bytes_that_are_not_utf8_survive_binary(client: Client) -> None:
    array = np.array([b"\xff\xfe\x00", b"ok"], dtype=np.object_)
    result = await client.run(infer(array, "BYTES", True, True))
    assert result.as_numpy("x").tolist() == [b"\xff\xfe\x00", b"ok"]


async def test_sync_model(client: Client) -> None:
    array = TENSORS["FP32"]
    result = await client.run(infer(array, "FP32", True, True, "sync"))
    assert np.array_equal(result.as_numpy("x"), array)


@pytest.mark.parametrize(("model", "status"), [("nope", "404"), ("down", "503")])
async def test_errors_reach_the_client(client: Client, model: str, status: str) -> None:
    array = TENSORS["FP32"]
    with pytest.raises(InferenceServerException) as caught:
        await client.run(infer(array, "FP32", True, True, model))
    assert caught.value.status() == status
    assert model in caught.value.message()
    result = await client.run(infer(array, "FP32", True, True))
    assert np.array_equal(result.as_numpy("x"), array)


async def test_bad_input_names_the_tensor(client: Client) -> None:
    # Declared as 4 elements, sent with 6.
    tensor = triton.InferInput("pixels", [6], "FP32")
    tensor.set_data_from_numpy(TENSORS["FP32"].reshape(-1), binary_data=False)
    tensor.set_shape([4])
    with pytest.raises(InferenceServerException) as caught:
        await client.run(lambda c: c.infer("echo", [tensor]))
    assert caught.value.status() == "400"
    assert "pixels" in caught.value.message()
