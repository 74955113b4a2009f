"""The gRPC server as tritonclient sees it: a real server on 127.0.0.1, Triton's own client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from gateway.dataplane import DataPlane
from gateway.metrics import Metrics
from gateway.model_repository import ModelRepository
from gateway.server.grpc import start_grpc_server
from gateway.settings import ServerSettings
from tests.models import EchoModel, SyncModel

TENSORS: dict[str, tuple[str, Any]] = {
    "FP32": ("FP32", np.array([[1.5, -2.0, 3.25], [0.0, 1e-30, 7.0]], dtype=np.float32)),
    "INT64": ("INT64", np.array([2**62, -1, 0], dtype=np.int64)),
    "BYTES": ("BYTES", np.array([b"caf\xc3\xa9", b"\xff\xfe\x00", b""], dtype=np.object_)),
    "FP16": ("FP16", np.array([0.5, -1.0, 65504.0, 6e-8], dtype=np.float16)),
    "BOOL": ("BOOL", np.array([[True, False], [False, True]], dtype=np.bool_)),
}


@dataclass
class Served:
    dataplane: DataPlane
    url: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    repository = ModelRepository()
    repository.update(EchoModel())
    repository.update(SyncModel())
    dataplane = DataPlane(repository)
    dataplane.starting = False
    settings = ServerSettings(listen_address="127.0.0.1")
    server, port = await start_grpc_server(dataplane, settings, Metrics(), 0)
    try:
        yield Served(dataplane, f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[triton.InferenceServerClient]:
    """The blocking client: call it through asyncio.to_thread, off the server's loop."""
    client = triton.InferenceServerClient(url=served.url)
    try:
        yield client
    finally:
        client.close()


def _input(name: str, datatype: str, array: Any) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("model", ["echo", "sync"])
async def test_infer_every_datatype_raw_in_raw_out(
    client: triton.InferenceServerClient, model: str
) -> None:
    inputs = [_input(name, datatype, array) for name, (datatype, array) in TENSORS.items()]
    result = await asyncio.to_thread(client.infer, model, inputs, request_id="t-1")
    response = result.get_response()
    assert response.id == "t-1"
    assert response.model_name == model
    # tritonclient sends raw contents, so the answer comes back raw.
    assert len(response.raw_output_contents) == len(TENSORS)
    for name, (datatype, array) in TENSORS.items():
        output = result.get_output(name)
        assert output.datatype == datatype
        assert list(output.shape) == list(array.shape)
        np.testing.assert_array_equal(result.as_numpy(name), array)


async def test_requested_output_subset(client: triton.InferenceServerClient) -> None:
    inputs = [_input(name, *TENSORS[name]) for name in ("FP32", "INT64")]
    outputs = [triton.InferRequestedOutput("INT64")]
    result = await asyncio.to_thread(client.infer, "echo", inputs, outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["INT64"]
    np.testing.assert_array_equal(result.as_numpy("INT64"), TENSORS["INT64"][1])


async def test_health(client: triton.InferenceServerClient, served: Served) -> None:
    assert await asyncio.to_thread(client.is_server_live) is True
    assert await asyncio.to_thread(client.is_server_ready) is True
    assert await asyncio.to_thread(client.is_model_ready, "echo") is True
    served.dataplane.draining = True
    assert await asyncio.to_thread(client.is_server_ready) is False
    assert await asyncio.to_thread(client.is_model_ready, "echo") is False


async def test_metadata(client: triton.InferenceServerClient, served: Served) -> None:
    server = await asyncio.to_thread(client.get_server_metadata)
    assert server.name == served.dataplane.server_name
    assert server.version == served.dataplane.server_version
    assert "binary_tensor_data" in server.extensions
    model = await asyncio.to_thread(client.get_model_metadata, "echo", as_json=True)
    assert model["name"] == "echo"


async def test_repository(client: triton.InferenceServerClient) -> None:
    index = await asyncio.to_thread(client.get_model_repository_index, as_json=True)
    assert {m["name"]: m["state"] for m in index["models"]} == {"echo": "READY", "sync": "READY"}
    await asyncio.to_thread(client.unload_model, "echo")
    assert await asyncio.to_thread(client.is_model_ready, "echo") is False
    index = await asyncio.to_thread(client.get_model_repository_index, as_json=True)
    assert {m["name"]: m["state"] for m in index["models"]}["echo"] == "UNAVAILABLE"
    await asyncio.to_thread(client.load_model, "echo")
    assert await asyncio.to_thread(client.is_model_ready, "echo") is True


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda c: c.is_model_ready("nope"), "StatusCode.NOT_FOUND"),
        (lambda c: c.get_model_metadata("nope"), "StatusCode.NOT_FOUND"),
        (lambda c: c.unload_model("nope"), "StatusCode.NOT_FOUND"),
        (lambda c: c.infer("nope", [_input("x", *TENSORS["FP32"])]), "StatusCode.NOT_FOUND"),
        (
            # Shape says 4 elements, the data holds 6.
            lambda c: c.infer("echo", [_shaped("pixels", [4], *TENSORS["FP32"])]),
            "StatusCode.INVALID_ARGUMENT",
        ),
    ],
)
async def test_errors(client: triton.InferenceServerClient, call: Any, status: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        await asyncio.to_thread(call, client)
    assert info.value.status() == status
    if "INVALID" in status:
        assert "pixels" in (info.value.message() or "")
    result = await asyncio.to_thread(client.infer, "echo", [_input("x", *TENSORS["FP32"])])
    np.testing.assert_array_equal(result.as_numpy("x"), TENSORS["FP32"][1])


def _shaped(name: str, shape: list[int], datatype: str, array: Any) -> triton.InferInput:
    """An input whose declared shape does not match its data (tritonclient does not check)."""
    tensor = _input(name, datatype, array)
    tensor.set_shape(shape)
    return tensor


async def test_aio_client(served: Served) -> None:
    client = triton_aio.InferenceServerClient(url=served.url)
    try:
        assert await client.is_server_ready() is True
        inputs = [_input(name, *TENSORS[name]) for name in ("BYTES", "FP16")]
        result = await client.infer("echo", inputs, client_timeout=30)
        for name in ("BYTES", "FP16"):
            np.testing.assert_array_equal(result.as_numpy(name), TENSORS[name][1])
    finally:
        await client.close()
