"""CloudEvents on v1 REST: an event in gives an event out, in the same content mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from gateway.dataplane import DataPlane
from gateway.metrics import Metrics
from gateway.model_repository import ModelRepository
from gateway.server.cloudevents import EventSettings
from gateway.server.rest import create_app
from gateway.settings import ServerSettings
from tests.models import EchoModel

STRUCTURED = "application/cloudevents+json"
REQUEST_ATTRIBUTES = {
    "id": "event-1",
    "source": "/client",
    "type": "io.example.request",
    "specversion": "1.0",
}


class PayloadModel(EchoModel):
    """Echo that remembers the payload it was given; answers bytes with their length."""

    def __init__(self) -> None:
        super().__init__("payload")
        self.payload: Any = None

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self.payload = payload
        if isinstance(payload, bytes):
            return {"length": len(payload)}
        return await super().predict(payload, headers)


@dataclass
class Served:
    session: aiohttp.ClientSession
    model: PayloadModel


@asynccontextmanager
async def serve() -> AsyncIterator[Served]:
    """A server with the payload model, reading the CE_* variables as they are now."""
    repository = ModelRepository()
    model = PayloadModel()
    repository.update(model)
    dataplane = DataPlane(repository)
    dataplane.starting = False
    app = create_app(dataplane, ServerSettings(listen_address="127.0.0.1"), Metrics())
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    session = aiohttp.ClientSession(base_url=str(server.make_url("/")))
    try:
        yield Served(session, model)
    finally:
        await session.close()
        await server.close()


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    for name in ("CE_TYPE", "CE_SOURCE", "CE_MERGE"):
        monkeypatch.delenv(name, raising=False)
    async with serve() as served:
        yield served


def binary_request(data: Any) -> ce_http.HTTPMessage:
    event = CloudEvent(dict(REQUEST_ATTRIBUTES, datacontenttype="application/json"), data)
    return ce_http.to_binary_event(event)


def structured_request(data: Any) -> ce_http.HTTPMessage:
    event = CloudEvent(dict(REQUEST_ATTRIBUTES, datacontenttype="application/json"), data)
    return ce_http.to_structured_event(event)


async def post(served: Served, message: ce_http.HTTPMessage) -> ce_http.HTTPMessage:
    async with served.session.post(
        "/v1/models/payload:predict", data=message.body, headers=message.headers
    ) as response:
        assert response.status == 200, await response.text()
        headers = {key.lower(): value for key, value in response.headers.items()}
        return ce_http.HTTPMessage(headers=headers, body=await response.read())


async def test_binary_event_in_gives_binary_event_out(served: Served) -> None:
    answer = await post(served, binary_request({"instances": [[1, 2]]}))
    assert served.model.payload == {"instances": [[1, 2]]}
    assert answer.headers["content-type"] == "application/json"
    assert orjson.loads(answer.body) == {"predictions": [[1, 2]]}
    event = ce_http.from_binary_event(answer)
    assert event.get_type() == "io.kserve.inference.response"
    assert event.get_source() == "io.kserve.inference.payload"
    assert event.get_id() != "event-1"
    assert event.get_time() is not None
    assert event.get_data() == {"predictions": [[1, 2]]}


async def test_structured_event_in_gives_structured_event_out(served: Served) -> None:
    answer = await post(served, structured_request({"instances": [3]}))
    assert served.model.payload == {"instances": [3]}
    assert answer.headers["content-type"] == STRUCTURED
    assert not any(key.startswith("ce-") for key in answer.headers)
    event = ce_http.from_structured_event(answer)
    assert event.get_type() == "io.kserve.inference.response"
    assert event.get_source() == "io.kserve.inference.payload"
    assert event.get_data() == {"predictions": [3]}


async def test_binary_event_with_non_json_data_reaches_the_model_as_bytes(
    served: Served,
) -> None:
    headers = {f"ce-{key}": value for key, value in REQUEST_ATTRIBUTES.items()}
    headers["content-type"] = "application/octet-stream"
    answer = await post(served, ce_http.HTTPMessage(headers=headers, body=b"\x00\x01\xff"))
    assert served.model.payload == b"\x00\x01\xff"
    assert ce_http.from_binary_event(answer).get_data() == {"length": 3}


async def test_structured_event_with_base64_data_reaches_the_model_as_bytes(
    served: Served,
) -> None:
    event = CloudEvent(dict(REQUEST_ATTRIBUTES), b"\x00\x01")
    answer = await post(served, ce_http.to_structured_event(event))
    assert served.model.payload == b"\x00\x01"
    assert ce_http.from_structured_event(answer).get_data() == {"length": 2}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}, b"{}", "source"),
        ({**{f"ce-{k}": v for k, v in REQUEST_ATTRIBUTES.items()},
          "content-type": "application/json"}, b"{not json", "not valid JSON"),
        ({"content-type": STRUCTURED}, b'{"specversion": "1.0", "data": {}}', "source"),
        ({"content-type": STRUCTURED}, b"[1, 2]", "invalid CloudEvent"),
        ({"content-type": STRUCTURED}, b"{oops", "invalid CloudEvent"),
    ],
)  # fmt: skip
async def test_bad_event_is_400(
    served: Served, headers: dict[str, str], body: bytes, expected: str
) -> None:
    async with served.session.post(
        "/v1/models/payload:predict", data=body, headers=headers
    ) as response:
        assert response.status == 400
        assert expected in (await response.json())["error"]
    answer = await post(served, binary_request({"instances": [1]}))
    assert orjson.loads(answer.body) == {"predictions": [1]}


async def test_ce_variables_label_and_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_TYPE", "io.example.answer")
    monkeypatch.setenv("CE_SOURCE", "/gateway")
    monkeypatch.setenv("CE_MERGE", "true")
    async with serve() as served:
        request = binary_request({"instances": [1]})
        request.headers["ce-traceext"] = "abc"
        event = ce_http.from_binary_event(await post(served, request))
    assert event.get_type() == "io.example.answer"
    assert event.get_source() == "/gateway"
    assert event.get_extension("traceext") == "abc"
    assert event.get_id() != "event-1"


def test_event_settings_default_to_kserve() -> None:
    settings = EventSettings.from_env({})
    assert settings == EventSettings("io.kserve.inference.response", None, False)
