"""Open Inference Protocol v2 REST (server.rest_v2): health, metadata, inference with the
binary extension, and the model repository extension."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gateway import InferRequest
from tests.server.rest_support import (
    INFERENCE_HEADER,
    Served,
    assert_serving,
    binary_body,
    error_of,
    split_response,
    v2_body,
)

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
