"""The REST server against a real server on 127.0.0.1, called with aiohttp's client."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.server.rest_support import (
    INFERENCE_HEADER,
    MAX_BODY,
    Served,
    assert_serving,
    error_of,
    samples,
    v2_body,
)

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
