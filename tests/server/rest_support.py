"""What the REST door's tests share: the models served, the server, request builders."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway import request_context
from gateway.dataplane import DataPlane
from gateway.errors import UpstreamStatusError
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.request_context import RequestContext
from gateway.server.rest import create_app
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
