"""The gRPC server, against a real server on 127.0.0.1, called with our own messages."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from gateway import InferOutput, InferRequest, InferResponse, request_context
from gateway._proto import SERVICE_NAME, pb
from gateway.dataplane import DataPlane
from gateway.errors import UpstreamStatusError
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.request_context import RequestContext
from gateway.server.grpc import SERVICE, start_grpc_server
from gateway.settings import MIB, ServerSettings
from tests.models import EchoModel, SlowModel, SyncModel

Code = grpc.StatusCode
MAX_RECEIVE = 1 * MIB


class RecordingModel(EchoModel):
    """Echo that remembers what it was called with, and answers with response headers."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.required_response_headers = True
        self.headers: dict[str, str] = {}
        self.context: RequestContext | None = None
        self.payload: Any = None

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self.headers = dict(headers or {})
        self.payload = payload
        self.context = request_context.current()
        response_headers.update(
            {
                "X-Model": "recorder",
                "x-bad": "line\nbreak",
                "bad key": "space",
                "content-type": "text/html",
                # Connection-specific: gRPC would pass it on, and HTTP/2 forbids it.
                "connection": "close",
                "grpc-status": "3",
            }
        )
        return await super().predict(payload, headers)


class HalfModel(EchoModel):
    """Answers its FP32 input as FP16, a type with no typed-contents field."""

    def __init__(self) -> None:
        super().__init__("half")

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        half = payload.inputs[0].as_numpy().astype(np.float16)
        out = InferOutput("y", list(half.shape), "FP16")
        out.set_data_from_numpy(half)
        return InferResponse(payload.id or "", self.name, [out])


class FailingModel(EchoModel):
    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        raise self.error


class DictModel(EchoModel):
    """Answers in the v2 JSON form."""

    def __init__(self) -> None:
        super().__init__("dict")

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        data = payload.inputs[0].as_numpy().tolist()
        output = {"name": "y", "shape": [len(data)], "datatype": "INT64", "data": data}
        return {"id": "d", "model_name": self.name, "outputs": [output]}


class TypedEcho(EchoModel):
    """Echo that describes its tensors, for ModelMetadata."""

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]


@dataclass
class Served:
    dataplane: DataPlane
    metrics: Metrics
    channel: grpc.aio.Channel
    recorder: RecordingModel

    def rpc(self, name: str) -> Any:
        """A callable for method `name` that sends and receives our pb messages."""
        method = SERVICE.methods_by_name[name]
        return self.channel.unary_unary(
            f"/{SERVICE_NAME}/{name}",
            request_serializer=getattr(pb, method.input_type.name).SerializeToString,
            response_deserializer=getattr(pb, method.output_type.name).FromString,
        )

    def raw_rpc(self, name: str) -> Any:
        """A callable for method `name` that sends bytes as they are."""
        return self.channel.unary_unary(f"/{SERVICE_NAME}/{name}", None, None)

    async def infer(self, request: pb.ModelInferRequest, **kwargs: Any) -> Any:
        return await self.rpc("ModelInfer")(request, **kwargs)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    repository = ModelRepository()
    recorder = RecordingModel()
    down = EchoModel("down")
    down.ready = False
    models: list[Model] = [
        TypedEcho(),
        SyncModel(),
        SlowModel(delay=0.3),
        recorder,
        down,
        HalfModel(),
        DictModel(),
        FailingModel("boom", RuntimeError("secret internals")),
        FailingModel("busy", UpstreamStatusError("predictor busy", status=503, retry_after=1.5)),
    ]
    for model in models:
        repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    metrics = Metrics()
    settings = ServerSettings(
        listen_address="127.0.0.1", grpc_max_receive_message_length=MAX_RECEIVE
    )
    server, port = await start_grpc_server(dataplane, settings, metrics, 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(dataplane, metrics, channel, recorder)
    finally:
        await channel.close(None)
        await server.stop(None)


def typed_request(model: str = "echo", request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    fp32 = request.inputs.add(name="f", datatype="FP32", shape=[2])
    fp32.contents.fp32_contents.extend([1.5, -2.25])
    int64 = request.inputs.add(name="i", datatype="INT64", shape=[1, 2])
    int64.contents.int64_contents.extend([2**40, -7])
    text = request.inputs.add(name="s", datatype="BYTES", shape=[2])
    text.contents.bytes_contents.extend([b"caf\xc3\xa9", b"\xff\x00"])
    flags = request.inputs.add(name="b", datatype="BOOL", shape=[3])
    flags.contents.bool_contents.extend([True, False, True])
    return request


def raw_request(model: str = "echo") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    request.raw_input_contents.append(np.arange(4, dtype="<f4").tobytes())
    return request


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def as_dict(metadata: Any) -> dict[str, Any]:
    return dict(metadata or ())


def in_flight(served: Served) -> float | None:
    return served.metrics.registry.get_sample_value("gateway_requests_in_flight")


async def assert_still_serving(served: Served) -> None:
    response = await served.infer(raw_request())
    assert response.raw_output_contents[0] == np.arange(4, dtype="<f4").tobytes()


# Methods


async def test_every_method_of_the_proto_is_served(served: Served) -> None:
    codes = {}
    for method in SERVICE.methods:
        # Empty bytes are a valid (all-default) message of every request type.
        try:
            await served.raw_rpc(method.name)(b"")
            codes[method.name] = Code.OK
        except grpc.aio.AioRpcError as exc:
            codes[method.name] = exc.code()
    # Defaults name no model: the model methods refuse that, but every method is known.
    model_methods = {"ModelReady", "ModelMetadata", "ModelInfer"}
    model_methods |= {"RepositoryModelLoad", "RepositoryModelUnload"}
    assert codes == {
        name: Code.NOT_FOUND if name in model_methods else Code.OK
        for name in SERVICE.methods_by_name
    }
    unknown = served.raw_rpc("NoSuchMethod")(b"")
    assert (await rpc_error(unknown)).code() is Code.UNIMPLEMENTED


async def test_health(served: Served) -> None:
    assert (await served.rpc("ServerLive")(pb.ServerLiveRequest())).live is True
    # "down" is registered but not ready, so the server is not ready either.
    assert (await served.rpc("ServerReady")(pb.ServerReadyRequest())).ready is False
    await served.rpc("RepositoryModelUnload")(pb.RepositoryModelUnloadRequest(model_name="down"))
    del served.dataplane.repository.models["down"]
    assert (await served.rpc("ServerReady")(pb.ServerReadyRequest())).ready is True
    served.dataplane.starting = True
    assert (await served.rpc("ServerReady")(pb.ServerReadyRequest())).ready is False


async def test_model_ready(served: Served) -> None:
    ready = served.rpc("ModelReady")
    assert (await ready(pb.ModelReadyRequest(name="echo"))).ready is True
    assert (await ready(pb.ModelReadyRequest(name="down"))).ready is False
    error = await rpc_error(ready(pb.ModelReadyRequest(name="nope")))
    assert error.code() is Code.NOT_FOUND
    assert "nope" in (error.details() or "")


async def test_server_metadata(served: Served) -> None:
    meta = await served.rpc("ServerMetadata")(pb.ServerMetadataRequest())
    assert meta.name == served.dataplane.server_name
    assert meta.version == served.dataplane.server_version
    assert "model_repository" in meta.extensions


async def test_model_metadata(served: Served) -> None:
    metadata = served.rpc("ModelMetadata")
    meta = await metadata(pb.ModelMetadataRequest(name="echo"))
    assert meta.name == "echo"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 3])]
    assert [t.name for t in meta.outputs] == ["x"]
    error = await rpc_error(metadata(pb.ModelMetadataRequest(name="nope")))
    assert error.code() is Code.NOT_FOUND


async def test_repository_index_load_and_unload(served: Served) -> None:
    index = served.rpc("RepositoryIndex")
    states = {m.name: m.state for m in (await index(pb.RepositoryIndexRequest())).models}
    assert states["echo"] == "READY"
    assert states["down"] == "UNAVAILABLE"
    only_ready = await index(pb.RepositoryIndexRequest(ready=True))
    assert "down" not in {m.name for m in only_ready.models}

    unload = pb.RepositoryModelUnloadRequest(model_name="echo")
    unloaded = await served.rpc("RepositoryModelUnload")(unload)
    assert (unloaded.model_name, unloaded.isUnloaded) == ("echo", True)
    assert (await served.rpc("ModelReady")(pb.ModelReadyRequest(name="echo"))).ready is False
    assert (await rpc_error(served.infer(raw_request()))).code() is Code.UNAVAILABLE

    loaded = await served.rpc("RepositoryModelLoad")(
        pb.RepositoryModelLoadRequest(model_name="echo")
    )
    assert (loaded.model_name, loaded.isLoaded) == ("echo", True)
    await assert_still_serving(served)

    missing = pb.RepositoryModelLoadRequest(model_name="nope")
    error = await rpc_error(served.rpc("RepositoryModelLoad")(missing))
    assert error.code() is Code.NOT_FOUND


# Inference


async def test_typed_contents_in_typed_contents_out(served: Served) -> None:
    response = await served.infer(typed_request(request_id="r1"))
    assert response.id == "r1"
    assert response.model_name == "echo"
    assert len(response.raw_output_contents) == 0
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["f"].contents.fp32_contents) == [1.5, -2.25]
    assert list(outputs["i"].contents.int64_contents) == [2**40, -7]
    assert list(outputs["i"].shape) == [1, 2]
    assert list(outputs["s"].contents.bytes_contents) == [b"caf\xc3\xa9", b"\xff\x00"]
    assert list(outputs["b"].contents.bool_contents) == [True, False, True]


async def test_raw_contents_in_raw_contents_out(served: Served) -> None:
    request = raw_request()
    request.inputs.add(name="n", datatype="INT64", shape=[3])
    request.raw_input_contents.append(np.array([1, -2, 2**50], dtype="<i8").tobytes())
    response = await served.infer(request)
    assert [o.name for o in response.outputs] == ["x", "n"]
    assert not response.outputs[0].HasField("contents")
    assert list(response.raw_output_contents) == list(request.raw_input_contents)


async def test_fp16_output_forces_raw_contents(served: Served) -> None:
    request = pb.ModelInferRequest(model_name="half")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[3])
    tensor.contents.fp32_contents.extend([0.5, 1.0, 65504.0])
    response = await served.infer(request)
    assert response.outputs[0].datatype == "FP16"
    assert not response.outputs[0].HasField("contents")
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f2")
    assert values.tolist() == [0.5, 1.0, 65504.0]


async def test_requested_outputs_only(served: Served) -> None:
    request = typed_request()
    request.outputs.add(name="i")
    response = await served.infer(request)
    assert [o.name for o in response.outputs] == ["i"]


async def test_dict_response_is_converted(served: Served) -> None:
    request = pb.ModelInferRequest(model_name="dict")
    tensor = request.inputs.add(name="x", datatype="INT64", shape=[2])
    tensor.contents.int64_contents.extend([4, 5])
    response = await served.infer(request)
    assert (response.id, response.outputs[0].name) == ("d", "y")
    assert list(response.outputs[0].contents.int64_contents) == [4, 5]


async def test_sync_model(served: Served) -> None:
    response = await served.infer(raw_request("sync"))
    assert response.model_name == "sync"
    assert response.raw_output_contents[0] == np.arange(4, dtype="<f4").tobytes()


# Errors


def _bad_tensor(served: Served) -> Any:
    request = pb.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    return served.infer(request)


def _oversized(served: Served) -> Any:
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="UINT8", shape=[MAX_RECEIVE + 1])
    request.raw_input_contents.append(bytes(MAX_RECEIVE + 1))
    return served.infer(request)


BAD_CALLS: dict[str, tuple[Callable[[Served], Any], grpc.StatusCode, str]] = {
    "unknown model": (lambda s: s.infer(raw_request("nope")), Code.NOT_FOUND, "'nope'"),
    "model not ready": (lambda s: s.infer(raw_request("down")), Code.UNAVAILABLE, "'down'"),
    "bad tensor": (_bad_tensor, Code.INVALID_ARGUMENT, "'pixels'"),
    "garbage infer": (
        lambda s: s.raw_rpc("ModelInfer")(b"\xff\xff\xff"),
        Code.INVALID_ARGUMENT,
        "protobuf",
    ),
    "garbage metadata": (
        lambda s: s.raw_rpc("ModelMetadata")(b"\x0a\x05ab"),
        Code.INVALID_ARGUMENT,
        "ModelMetadataRequest",
    ),
    "over receive limit": (_oversized, Code.RESOURCE_EXHAUSTED, ""),
    "unknown datatype": (
        lambda s: s.infer(
            pb.ModelInferRequest(
                model_name="echo",
                inputs=[pb.ModelInferRequest.InferInputTensor(name="q", datatype="FP8", shape=[1])],
            )
        ),
        Code.INVALID_ARGUMENT,
        "'q'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_bad_requests_are_refused_and_the_server_goes_on(served: Served, case: str) -> None:
    call, code, detail = BAD_CALLS[case]
    error = await rpc_error(call(served))
    assert error.code() is code, error.details()
    assert detail in (error.details() or "")
    await assert_still_serving(served)


async def test_unexpected_error_is_internal_short_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.server.grpc"):
        error = await rpc_error(served.infer(raw_request("boom")))
    assert error.code() is Code.INTERNAL
    assert "secret" not in (error.details() or "")
    assert "RuntimeError" in (error.details() or "")
    logged = [r for r in caplog.records if r.name == "gateway.server.grpc"]
    assert logged
    assert logged[0].exc_info is not None
    assert "secret internals" in str(logged[0].exc_info[1])
    await assert_still_serving(served)


async def test_retry_after_and_request_id_travel_in_trailers(served: Served) -> None:
    call = served.infer(raw_request("busy"), metadata=(("x-request-id", "try-1"),))
    error = await rpc_error(call)
    assert error.code() is Code.UNAVAILABLE
    assert error.details() == "predictor busy"
    trailers = as_dict(error.trailing_metadata())
    assert trailers["retry-after"] == "2"
    assert trailers["x-request-id"] == "try-1"


# Request context, metadata and metrics


async def test_request_id_from_metadata_then_request_then_generated(served: Served) -> None:
    infer = served.rpc("ModelInfer")
    call = infer(raw_request("recorder"), metadata=(("x-request-id", "abc"),))
    await call
    # In the trailers (as on errors): no initial metadata batch of its own.
    assert as_dict(await call.trailing_metadata())["x-request-id"] == "abc"
    assert "x-request-id" not in as_dict(await call.initial_metadata())
    assert served.recorder.context is not None
    assert served.recorder.context.request_id == "abc"
    assert served.recorder.context.protocol == "grpc-v2"

    request = raw_request("recorder")
    request.id = "from-body"
    call = infer(request)
    await call
    assert as_dict(await call.trailing_metadata())["x-request-id"] == "from-body"

    call = infer(raw_request("recorder"))
    await call
    generated = as_dict(await call.trailing_metadata())["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", str(generated))
    assert served.recorder.context.request_id == generated


async def test_metadata_in_as_headers_and_response_headers_out(served: Served) -> None:
    metadata = (("x-custom", "one"), ("trace-bin", b"\x00\x01"))
    call = served.rpc("ModelInfer")(raw_request("recorder"), metadata=metadata)
    await call
    headers = served.recorder.headers
    assert headers["x-custom"] == "one"
    assert "trace-bin" not in headers
    assert all(key == key.lower() for key in headers)
    sent = as_dict(await call.initial_metadata())
    assert sent["x-model"] == "recorder"
    assert "x-bad" not in sent  # a newline cannot travel in metadata
    assert "text/html" not in str(sent.get("content-type", ""))
    assert "connection" not in sent
    assert "grpc-status" not in sent
    assert (await call.code()) is Code.OK


async def test_client_deadline_becomes_the_context_deadline(served: Served) -> None:
    before = time.monotonic()
    await served.infer(raw_request("recorder"), timeout=30)
    context = served.recorder.context
    assert context is not None
    assert context.deadline is not None
    assert before + 25 < context.deadline < time.monotonic() + 31

    await served.infer(raw_request("recorder"))
    assert served.recorder.context is not None
    assert served.recorder.context.deadline is None


async def test_deadline_passing_in_the_model(served: Served) -> None:
    error = await rpc_error(served.infer(raw_request("slow"), timeout=0.05))
    assert error.code() is Code.DEADLINE_EXCEEDED
    expected = 'gateway_requests_total{code="DEADLINE_EXCEEDED",model_name="slow"'
    for _ in range(100):  # the server learns of the deadline on its own clock
        if expected in served.metrics.exposition()[0].decode():
            break
        await asyncio.sleep(0.01)
    assert expected in served.metrics.exposition()[0].decode()
    assert in_flight(served) == 0
    await assert_still_serving(served)


async def test_metrics(served: Served) -> None:
    await served.infer(raw_request())
    await served.infer(raw_request())
    await rpc_error(served.infer(raw_request("nope")))
    await rpc_error(served.raw_rpc("ModelInfer")(b"\xff"))
    text = served.metrics.exposition()[0].decode()
    ok = 'gateway_requests_total{code="OK",model_name="echo",protocol="grpc-v2"} 2.0'
    assert ok in text
    # Unknown names are not labels, so made-up names cannot grow the series without bound.
    assert 'code="NOT_FOUND",model_name="",protocol="grpc-v2"} 1.0' in text
    assert 'code="INVALID_ARGUMENT",model_name="",protocol="grpc-v2"} 1.0' in text
    assert 'request_predict_seconds_count{model_name="echo"} 2.0' in text
    assert "gateway_requests_in_flight 0.0" in text


async def test_in_flight_counts_a_running_request(served: Served) -> None:
    call = asyncio.ensure_future(served.infer(raw_request("slow")))
    for _ in range(200):
        if in_flight(served) == 1 or call.done():
            break
        await asyncio.sleep(0.005)
    assert in_flight(served) == 1
    await call
    assert in_flight(served) == 0


async def test_model_gets_raw_inputs_as_views_of_the_message(served: Served) -> None:
    await served.infer(raw_request("recorder"))
    payload = served.recorder.payload
    assert isinstance(payload, InferRequest)
    # Raw contents were sliced out of the received bytes, not parsed by protobuf.
    assert isinstance(payload.inputs[0]._raw_data, memoryview)
    assert payload.use_binary_outputs is True
