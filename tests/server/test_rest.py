"""The REST server against a real server on 127.0.0.1, called with aiohttp's client."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway import InferRequest, request_context
from gateway.dataplane import DataPlane
from gateway.errors import UpstreamStatusError
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.request_context import RequestContext
from gateway.server.rest import create_app, routes
from gateway.settings import ServerSettings
from tests.models import EchoModel, SyncModel

MAX_BODY = 64 * 1024
INFERENCE_HEADER = "Inference-Header-Content-Length"


class RecordingModel(EchoModel):
    """Echo that remembers how it was called and answers with headers of its own."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.required_response_headers = True
        self.calls: list[str] = []
        self.headers: dict[str, str] = {}
        self.payload: Any = None
        self.context: RequestContext | None = None

    def _record(self, verb: str, payload: Any, headers: dict[str, str] | None) -> None:
        self.calls.append(verb)
        self.headers = dict(headers or {})
        self.payload = payload
        self.context = request_context.current()
        if self.context is not None:
            self.context.upstream_timings.append('edge;dur=1.5;desc="upstream"')

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self._record("predict", payload, headers)
        response_headers.update(
            {"X-Model": "recorder", "Content-Type": "text/html", "X-Bad": "line\nbreak"}
        )
        if isinstance(payload, bytes):
            return payload
        return await super().predict(payload, headers)

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        self._record("explain", payload, headers)
        return await super().explain(payload, headers)


class ThreadModel(SyncModel):
    """Sync handlers that remember which thread ran them."""

    def __init__(self) -> None:
        super().__init__("sync")
        self.threads: list[int] = []

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        self.threads.append(threading.get_ident())
        return super().preprocess(payload, headers)

    def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self.threads.append(threading.get_ident())
        return super().predict(payload, headers)


class DictModel(EchoModel):
    """Answers v2 with a plain dict instead of an InferResponse."""

    def __init__(self) -> None:
        super().__init__("dict")

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        return {
            "model_name": "dict",
            "outputs": [{"name": "y", "shape": [1], "datatype": "INT32", "data": [7]}],
        }


class GatedModel(EchoModel):
    """Echo that holds each request until the test releases it."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self.entered.set()
        await self.release.wait()
        return await super().predict(payload, headers)


class FailingModel(EchoModel):
    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        raise self.error


@dataclass
class Served:
    app: web.Application
    session: aiohttp.ClientSession
    dataplane: DataPlane
    metrics: Metrics
    recorder: RecordingModel
    sync: ThreadModel
    down: EchoModel
    gated: GatedModel


@asynccontextmanager
async def serve(settings: ServerSettings) -> AsyncIterator[Served]:
    repository = ModelRepository()
    recorder, sync, down, gated = RecordingModel(), ThreadModel(), EchoModel("down"), GatedModel()
    down.ready = False
    models: list[Model] = [
        EchoModel(),
        recorder,
        sync,
        down,
        DictModel(),
        gated,
        FailingModel("boom", RuntimeError("secret internals")),
        FailingModel("busy", UpstreamStatusError("predictor busy", status=503, retry_after=1.5)),
    ]
    for model in models:
        repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    metrics = Metrics()
    app = create_app(dataplane, settings, metrics)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    session = aiohttp.ClientSession(base_url=str(server.make_url("/")))
    try:
        yield Served(app, session, dataplane, metrics, recorder, sync, down, gated)
    finally:
        await session.close()
        await server.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    settings = ServerSettings(
        listen_address="127.0.0.1", max_request_bytes=MAX_BODY, enable_docs_url=True
    )
    async with serve(settings) as served:
        yield served


def v2_body(name: str = "x", data: list[float] | None = None) -> dict[str, Any]:
    values = data if data is not None else [1.0, 2.0]
    return {"inputs": [{"name": name, "shape": [len(values)], "datatype": "FP32", "data": values}]}


def binary_body(
    arrays: dict[str, np.ndarray[Any, Any]],
    parameters: dict[str, Any] | None = None,
    outputs: list[dict[str, Any]] | None = None,
) -> tuple[bytes, int]:
    """A binary-extension request, built by hand: the server's codec is what is tested."""
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": array.nbytes},
            }
            for name, array in arrays.items()
        ]
    }
    if parameters:
        header["parameters"] = parameters
    if outputs:
        header["outputs"] = outputs
    head = orjson.dumps(header)
    return head + b"".join(array.tobytes() for array in arrays.values()), len(head)


def split_response(body: bytes, length: int) -> tuple[dict[str, Any], bytes]:
    header: dict[str, Any] = orjson.loads(body[:length])
    return header, body[length:]


async def error_of(response: aiohttp.ClientResponse) -> str:
    assert response.content_type == "application/json"
    document = await response.json()
    assert set(document) == {"error"}
    message: str = document["error"]
    return message


async def assert_serving(session: aiohttp.ClientSession) -> None:
    """A good request right after a failed one still succeeds."""
    async with session.post("/v2/models/echo/infer", json=v2_body()) as response:
        assert response.status == 200
        assert (await response.json())["outputs"][0]["data"] == [1.0, 2.0]


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of metric sample `name`, by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


# v1


async def test_root_is_alive(served: Served) -> None:
    async with served.session.get("/") as response:
        assert response.status == 200
        assert await response.json() == {"status": "alive"}


async def test_v1_lists_models(served: Served) -> None:
    async with served.session.get("/v1/models") as response:
        models = (await response.json())["models"]
    assert {"echo", "recorder", "down", "sync"} <= set(models)


async def test_v1_model_readiness(served: Served) -> None:
    async with served.session.get("/v1/models/echo") as response:
        assert response.status == 200
        assert await response.json() == {"name": "echo", "ready": True}
    async with served.session.get("/v1/models/down") as response:
        assert response.status == 503
        assert await response.json() == {"name": "down", "ready": False}
    async with served.session.get("/v1/models/nope") as response:
        assert response.status == 404
        assert "nope" in await error_of(response)


async def test_v1_predict(served: Served) -> None:
    body = {"instances": [[1, 2], [3, 4]]}
    async with served.session.post("/v1/models/echo:predict", json=body) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"predictions": [[1, 2], [3, 4]]}


async def test_v1_explain(served: Served) -> None:
    body = {"instances": [[1, 2]]}
    async with served.session.post("/v1/models/recorder:explain", json=body) as response:
        assert response.status == 200
        assert await response.json() == {"explanations": [[1, 2]]}
    assert served.recorder.calls == ["explain"]


async def test_v1_body_of_another_type_reaches_the_model_as_bytes(served: Served) -> None:
    headers = {"Content-Type": "text/csv"}
    async with served.session.post(
        "/v1/models/recorder:predict", data=b"1,2\n3,4\n", headers=headers
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert await response.read() == b"1,2\n3,4\n"
    assert served.recorder.payload == b"1,2\n3,4\n"


async def test_v1_json_with_parameters_in_its_content_type_is_parsed(served: Served) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    async with served.session.post(
        "/v1/models/recorder:predict", data=b'{"instances": [5]}', headers=headers
    ) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": [5]}
    assert served.recorder.payload == {"instances": [5]}


# v2: health and metadata


async def test_v2_server_metadata(served: Served) -> None:
    async with served.session.get("/v2") as response:
        metadata = await response.json()
    assert metadata["name"] == served.dataplane.server_name
    assert metadata["version"] == served.dataplane.server_version
    assert "binary_tensor_data" in metadata["extensions"]


async def test_v2_health(served: Served) -> None:
    async with served.session.get("/v2/health/live") as response:
        assert response.status == 200
        assert await response.json() == {"live": True}
    # A registered model is down, so the server is not ready.
    async with served.session.get("/v2/health/ready") as response:
        assert response.status == 503
        assert await response.json() == {"ready": False}
    served.down.ready = True
    async with served.session.get("/v2/health/ready") as response:
        assert response.status == 200
        assert await response.json() == {"ready": True}
    served.dataplane.starting = True
    async with served.session.get("/v2/health/ready") as response:
        assert response.status == 503


async def test_v2_lists_models(served: Served) -> None:
    async with served.session.get("/v2/models") as response:
        assert "echo" in (await response.json())["models"]


@pytest.mark.parametrize(
    ("path", "versions"),
    [("/v2/models/echo", []), ("/v2/models/echo/versions/3", ["3"])],
)
async def test_v2_model_metadata(served: Served, path: str, versions: list[str]) -> None:
    async with served.session.get(path) as response:
        assert response.status == 200
        metadata = await response.json()
    assert metadata["name"] == "echo"
    assert metadata["versions"] == versions


@pytest.mark.parametrize("suffix", ["/ready", "/versions/1/ready"])
async def test_v2_model_readiness(served: Served, suffix: str) -> None:
    async with served.session.get(f"/v2/models/echo{suffix}") as response:
        assert response.status == 200
        assert await response.json() == {"name": "echo", "ready": True}
    async with served.session.get(f"/v2/models/down{suffix}") as response:
        assert response.status == 503
        assert await response.json() == {"name": "down", "ready": False}
    async with served.session.get(f"/v2/models/nope{suffix}") as response:
        assert response.status == 404
        assert "nope" in await error_of(response)


async def test_v2_metadata_of_an_unknown_model_is_404(served: Served) -> None:
    async with served.session.get("/v2/models/nope") as response:
        assert response.status == 404
        assert "'nope'" in await error_of(response)


# v2: inference


async def test_v2_infer_json(served: Served) -> None:
    body = v2_body(data=[1.5, -2.0, 3.25]) | {"id": "req-1"}
    async with served.session.post("/v2/models/echo/infer", json=body) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert INFERENCE_HEADER not in response.headers
        answer = await response.json()
    assert answer["id"] == "req-1"
    assert answer["model_name"] == "echo"
    assert answer["outputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [3], "data": [1.5, -2.0, 3.25]}
    ]


async def test_v2_infer_takes_the_version_from_the_url(served: Served) -> None:
    async with served.session.post(
        "/v2/models/recorder/versions/7/infer", json=v2_body()
    ) as response:
        assert response.status == 200
    assert isinstance(served.recorder.payload, InferRequest)
    assert served.recorder.payload.model_version == "7"


@pytest.mark.parametrize(
    "path", ["/v2/models/recorder/explain", "/v2/models/recorder/versions/2/explain"]
)
async def test_v2_explain(served: Served, path: str) -> None:
    async with served.session.post(path, json=v2_body()) as response:
        assert response.status == 200
        assert (await response.json())["outputs"][0]["data"] == [1.0, 2.0]
        assert "explain;dur=" in response.headers["Server-Timing"]
    assert served.recorder.calls == ["explain"]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
async def test_v2_binary_in_and_out(served: Served, content_type: str | None) -> None:
    array = np.array([[1.5, -2.0], [0.0, 7.25]], dtype=np.float32)
    body, length = binary_body({"x": array}, parameters={"binary_data_output": True})
    headers = {INFERENCE_HEADER: str(length)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with served.session.post(
        "/v2/models/recorder/infer",
        data=body,
        headers=headers,
        skip_auto_headers=["Content-Type"],
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        header, tail = split_response(
            await response.read(), int(response.headers[INFERENCE_HEADER])
        )
    assert served.recorder.headers.get("content-type") == content_type
    (output,) = header["outputs"]
    assert output["parameters"] == {"binary_data_size": array.nbytes}
    assert "data" not in output
    assert np.array_equal(np.frombuffer(tail, np.float32).reshape(2, 2), array)


async def test_v2_binary_in_json_out(served: Served) -> None:
    body, length = binary_body({"x": np.array([4.0, 5.0], np.float32)})
    async with served.session.post(
        "/v2/models/echo/infer", data=body, headers={INFERENCE_HEADER: str(length)}
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert (await response.json())["outputs"][0]["data"] == [4.0, 5.0]


@pytest.mark.parametrize("default", [True, False])
async def test_v2_each_output_binary_data_overrides_the_request(
    served: Served, default: bool
) -> None:
    a, b = np.array([1.0], np.float32), np.array([2.0, 3.0], np.float32)
    body, length = binary_body(
        {"a": a, "b": b},
        parameters={"binary_data_output": default},
        outputs=[{"name": "a", "parameters": {"binary_data": not default}}, {"name": "b"}],
    )
    async with served.session.post(
        "/v2/models/echo/infer", data=body, headers={INFERENCE_HEADER: str(length)}
    ) as response:
        assert response.status == 200
        header, tail = split_response(
            await response.read(), int(response.headers[INFERENCE_HEADER])
        )
    outputs = {output["name"]: output for output in header["outputs"]}
    binary, plain = ("b", "a") if default else ("a", "b")
    raw = {"a": a, "b": b}[binary]
    assert outputs[binary]["parameters"]["binary_data_size"] == raw.nbytes
    assert np.array_equal(np.frombuffer(tail, np.float32), raw)
    assert outputs[plain]["data"] == {"a": a, "b": b}[plain].tolist()


async def test_v2_a_dict_from_the_model_is_sent_as_json(served: Served) -> None:
    async with served.session.post("/v2/models/dict/infer", json=v2_body()) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert (await response.json())["outputs"][0]["data"] == [7]


async def test_sync_handlers_run_off_the_event_loop(served: Served) -> None:
    async with served.session.post("/v2/models/sync/infer", json=v2_body()) as response:
        assert response.status == 200
        assert (await response.json())["outputs"][0]["data"] == [1.0, 2.0]
    loop_thread = threading.get_ident()  # the test and the server share this loop
    assert len(served.sync.threads) == 2
    assert loop_thread not in served.sync.threads


# Model repository extension


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_repository_index(served: Served, method: str) -> None:
    async with served.session.request(method, "/v2/repository/index") as response:
        assert response.status == 200
        index = {entry["name"]: entry for entry in await response.json()}
    assert index["echo"]["state"] == "READY"
    assert index["down"]["state"] == "UNAVAILABLE"


async def test_repository_index_of_ready_models(served: Served) -> None:
    async with served.session.post("/v2/repository/index", json={"ready": True}) as response:
        names = {entry["name"] for entry in await response.json()}
    assert "echo" in names
    assert "down" not in names


async def test_repository_index_refuses_a_bad_body(served: Served) -> None:
    async with served.session.post("/v2/repository/index", json={"ready": "yes"}) as response:
        assert response.status == 400
        assert "ready" in await error_of(response)
    await assert_serving(served.session)


async def test_unload_and_load(served: Served) -> None:
    async with served.session.post("/v2/repository/models/echo/unload") as response:
        assert response.status == 200
        assert await response.json() == {"name": "echo", "unload": True}
    async with served.session.get("/v2/models/echo/ready") as response:
        assert response.status == 503
    async with served.session.post("/v2/models/echo/infer", json=v2_body()) as response:
        assert response.status == 503
    async with served.session.post("/v2/repository/models/echo/load") as response:
        assert response.status == 200
        assert await response.json() == {"name": "echo", "load": True}
    await assert_serving(served.session)


@pytest.mark.parametrize("action", ["load", "unload"])
async def test_repository_action_on_an_unknown_model_is_404(served: Served, action: str) -> None:
    async with served.session.post(f"/v2/repository/models/nope/{action}") as response:
        assert response.status == 404
        assert "nope" in await error_of(response)


# Errors


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/models/nope:predict", {"instances": [1]}), ("/v2/models/nope/infer", v2_body())],
)
async def test_unknown_model_is_404(served: Served, path: str, body: dict[str, Any]) -> None:
    async with served.session.post(path, json=body) as response:
        assert response.status == 404
        assert "'nope'" in await error_of(response)
    await assert_serving(served.session)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/models/down:predict", {"instances": [1]}), ("/v2/models/down/infer", v2_body())],
)
async def test_model_not_ready_is_503(served: Served, path: str, body: dict[str, Any]) -> None:
    async with served.session.post(path, json=body) as response:
        assert response.status == 503
        assert "not ready" in await error_of(response)
    await assert_serving(served.session)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"inputs": [{"name": "pixels", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
         "tensor 'pixels': data has 2 elements"),
        (b'{"inputs": [{"name": "pixels", "shape": [2], "datatype": "FP32", '
         b'"parameters": {"binary_data_size": 8}}]}',
         "tensor 'pixels': binary_data_size 8 runs past the end"),
        (b'{"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP99", "data": [1]}]}',
         "pixels"),
    ],
)  # fmt: skip
async def test_bad_input_is_400_naming_the_tensor(
    served: Served, data: bytes, expected: str
) -> None:
    headers = {INFERENCE_HEADER: str(len(data))}
    async with served.session.post("/v2/models/echo/infer", data=data, headers=headers) as response:
        assert response.status == 400
        assert expected in await error_of(response)
    await assert_serving(served.session)


async def test_a_bad_inference_header_is_400(served: Served) -> None:
    async with served.session.post(
        "/v2/models/echo/infer", data=b"{}", headers={INFERENCE_HEADER: "10"}
    ) as response:
        assert response.status == 400
        assert INFERENCE_HEADER in await error_of(response)
    await assert_serving(served.session)


@pytest.mark.parametrize("path", ["/v1/models/echo:predict", "/v2/models/echo/infer"])
async def test_malformed_json_is_400(served: Served, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    async with served.session.post(path, data=b'{"inputs": [', headers=headers) as response:
        assert response.status == 400
        assert "not valid JSON" in await error_of(response)
    await assert_serving(served.session)


async def test_oversized_body_with_content_length_is_413_unread(served: Served) -> None:
    body = b'{"instances": [1]}' + b" " * MAX_BODY
    async with served.session.post("/v1/models/recorder:predict", data=body) as response:
        assert response.status == 413
        assert f"limit is {MAX_BODY}" in await error_of(response)
    assert served.recorder.calls == []
    await assert_serving(served.session)


async def test_oversized_chunked_body_is_413(served: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"instances": [1]}'
        for _ in range(4):
            yield b" " * (MAX_BODY // 2)

    async with served.session.post("/v1/models/recorder:predict", data=chunks()) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        assert str(MAX_BODY) in await error_of(response)
    assert served.recorder.calls == []
    await assert_serving(served.session)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_at_the_limit_is_served(served: Served, chunked: bool) -> None:
    body = b'{"instances": [1]}'
    body += b" " * (MAX_BODY - len(body))

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    data: Any = chunks() if chunked else body
    async with served.session.post("/v1/models/echo:predict", data=data) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": [1]}


async def test_wrong_method_is_405(served: Served) -> None:
    async with served.session.get("/v2/models/echo/infer") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert "GET is not allowed" in await error_of(response)
    await assert_serving(served.session)


async def test_unknown_route_is_404(served: Served) -> None:
    async with served.session.get("/v3/nothing") as response:
        assert response.status == 404
        assert "/v3/nothing" in await error_of(response)
    await assert_serving(served.session)


async def test_an_unexpected_error_is_500_without_internals(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.server.rest"):
        async with served.session.post("/v2/models/boom/infer", json=v2_body()) as response:
            assert response.status == 500
            message = await error_of(response)
    assert message == "internal error: RuntimeError"
    assert "secret internals" not in message
    (record,) = [r for r in caplog.records if r.name == "gateway.server.rest"]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])
    await assert_serving(served.session)


async def test_upstream_status_and_retry_after_reach_the_client(served: Served) -> None:
    async with served.session.post("/v2/models/busy/infer", json=v2_body()) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert await error_of(response) == "predictor busy"
    await assert_serving(served.session)


# Per-request context, headers and timing


@pytest.mark.parametrize(
    ("path", "body", "protocol"),
    [("/v1/models/recorder:predict", {"instances": [1]}, "v1"),
     ("/v2/models/recorder/infer", v2_body(), "v2")],
)  # fmt: skip
async def test_request_id_is_echoed_and_given_to_the_model(
    served: Served, path: str, body: dict[str, Any], protocol: str
) -> None:
    async with served.session.post(path, json=body, headers={"X-Request-ID": "abc-1"}) as response:
        assert response.status == 200
        assert response.headers["x-request-id"] == "abc-1"
    context = served.recorder.context
    assert context is not None
    assert context.request_id == "abc-1"
    assert context.protocol == protocol


async def test_request_id_is_generated_when_missing(served: Served) -> None:
    ids = []
    for path in ("/v2/models/echo/infer", "/v2/models/echo/infer", "/no/such/route"):
        async with served.session.post(path, json=v2_body()) as response:
            ids.append(response.headers["x-request-id"])
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == 3


async def test_model_sees_headers_as_a_plain_lowercase_dict(served: Served) -> None:
    headers = {"X-Custom-Thing": "1", "Authorization": "Bearer t"}
    async with served.session.post(
        "/v2/models/recorder/infer", json=v2_body(), headers=headers
    ) as response:
        assert response.status == 200
    seen = served.recorder.headers
    assert type(seen) is dict
    assert seen["x-custom-thing"] == "1"
    assert seen["authorization"] == "Bearer t"
    assert all(key == key.lower() for key in seen)


async def test_model_response_headers_are_sent(served: Served) -> None:
    async with served.session.post("/v2/models/recorder/infer", json=v2_body()) as response:
        assert response.status == 200
        assert response.headers["X-Model"] == "recorder"
        # The server owns the content type: the model's would mislabel the body.
        assert response.content_type == "application/json"
        # A value HTTP cannot carry is dropped rather than failing the response.
        assert "X-Bad" not in response.headers


async def test_server_timing_lists_stages_then_upstream_entries(served: Served) -> None:
    async with served.session.post("/v2/models/recorder/infer", json=v2_body()) as response:
        timing = response.headers["Server-Timing"]
    number = r"\d+\.\d{3}"
    # The recorder model only overrides predict: default stages do nothing and are not timed.
    assert re.fullmatch(rf'predict;dur={number}, edge;dur=1\.5;desc="upstream"', timing), timing


async def test_metadata_routes_have_no_server_timing(served: Served) -> None:
    async with served.session.get("/v2/models/echo") as response:
        assert "Server-Timing" not in response.headers
        assert "x-request-id" in response.headers


# Metrics


async def test_metrics_count_requests_and_time_stages(served: Served) -> None:
    for _ in range(2):
        async with served.session.post("/v2/models/echo/infer", json=v2_body()) as response:
            assert response.status == 200
    async with served.session.post("/v1/models/echo:predict", json={"instances": [1]}):
        pass
    async with served.session.post("/v2/models/nope/infer", json=v2_body()):
        pass
    async with served.session.get("/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    requests = samples(text, "gateway_requests_total")
    assert requests[(("code", "200"), ("model_name", "echo"), ("protocol", "v2"))] == 2
    assert requests[(("code", "200"), ("model_name", "echo"), ("protocol", "v1"))] == 1
    assert requests[(("code", "404"), ("model_name", ""), ("protocol", "v2"))] == 1
    # EchoModel has only a predict of its own; default stages are skipped, not timed.
    assert samples(text, "request_predict_seconds_count")[(("model_name", "echo"),)] == 3
    assert (("model_name", "echo"),) not in samples(text, "request_preprocess_seconds_count")
    assert samples(text, "gateway_requests_in_flight")[()] == 0


async def test_in_flight_counts_requests_being_served(served: Served) -> None:
    def in_flight() -> float | None:
        return served.metrics.registry.get_sample_value("gateway_requests_in_flight")

    async def call() -> int:
        async with served.session.post("/v2/models/gated/infer", json=v2_body()) as response:
            return response.status

    task = asyncio.create_task(call())
    await asyncio.wait_for(served.gated.entered.wait(), 5)
    assert in_flight() == 1
    served.gated.release.set()
    assert await task == 200
    assert in_flight() == 0


# Docs


async def test_openapi_documents_every_route(served: Served) -> None:
    async with served.session.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    served_routes = {
        (route.method, route.resource.canonical)
        for route in served.app.router.routes()
        if route.resource is not None
    }
    assert documented == served_routes
    assert {(route.method, route.path) for route in routes(docs=True)} == documented
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert [p["name"] for p in infer["parameters"]] == ["name"]


async def test_docs_page_lists_the_endpoints_without_a_cdn(served: Served) -> None:
    async with served.session.get("/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/v2/models/{name}/infer" in page
    assert "/v1/models/{name}:predict" in page
    assert "<script" not in page
    assert "https://" not in page


async def test_docs_are_404_when_disabled() -> None:
    settings = ServerSettings(listen_address="127.0.0.1", enable_docs_url=False)
    async with serve(settings) as served:
        for path in ("/docs", "/openapi.json"):
            async with served.session.get(path) as response:
                assert response.status == 404
                assert path in await error_of(response)
        await assert_serving(served.session)


# Deadlines


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"x-request-timeout": "2.5"}, 2.0, 2.5),
        ({"x-envoy-expected-rq-timeout-ms": "1500"}, 1.0, 1.5),
        ({"x-request-timeout": "9", "x-envoy-expected-rq-timeout-ms": "700"}, 0.2, 0.7),
    ],
)
def test_timeout_headers_set_the_request_deadline(
    headers: dict[str, str], low: float, high: float
) -> None:
    import time as _time

    from gateway.server.rest import inbound_deadline

    deadline = inbound_deadline(headers)
    assert deadline is not None
    assert low < deadline - _time.monotonic() <= high


def test_no_timeout_header_means_no_deadline() -> None:
    from gateway.server.rest import inbound_deadline

    assert inbound_deadline({}) is None


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf"])
async def test_a_bad_timeout_header_is_refused(served: Served, value: str) -> None:
    headers = {"x-request-timeout": value}
    async with served.session.post("/v2/models/echo/infer", json=v2_body(), headers=headers) as r:
        assert r.status == 400
        assert "x-request-timeout" in (await r.json())["error"]
    async with served.session.post("/v2/models/echo/infer", json=v2_body()) as response:
        assert response.status == 200
