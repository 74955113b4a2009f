"""KServe v1 REST (server.rest_v1): model list and readiness, predict and explain."""

from __future__ import annotations

from tests.server.rest_support import (
    Served,
    error_of,
)

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
