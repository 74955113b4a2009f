"""`GrpcHop` against real gRPC servers on 127.0.0.1: our own, and bare ones that misbehave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway import InferInput, InferRequest, InferResponse, request_context
from gateway._proto import SERVICE_NAME, pb
from gateway.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    UnsupportedProtocol,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.hops.grpc import CHANNEL_OPTIONS, GrpcHop
from gateway.hops.settings import HopSettings
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.request_context import RequestContext
from tests.hops.upstreams import (
    assert_echoed,
    deadline_in,
    every_datatype,
    free_port,
    make_authority,
    serve_grpc,
    serve_model_infer,
    serving,
    shaped,
)
from tests.models import EchoModel, SlowModel

Code = grpc.StatusCode
MARGIN = 5.0


def settings(host: str, **options: Any) -> HopSettings:
    options.setdefault("model_name", "echo")
    return HopSettings(role="predictor", host=host, protocol="grpc-v2", **options)


class Failing(EchoModel):
    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        raise self.error


class Recording(EchoModel):
    """Echo that remembers the headers and the request context it was called in."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.headers: dict[str, str] = {}
        self.context: RequestContext | None = None

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.headers = dict(headers or {})
        self.context = request_context.current()
        return await super().predict(payload, headers)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Recording]]:
    recorder = Recording()
    down = EchoModel("down")
    down.ready = False
    models = [
        EchoModel(),
        recorder,
        down,
        SlowModel(delay=60),
        Failing("invalid", InvalidInput("tensor x: bad shape")),
        Failing("busy", UpstreamStatusError("predictor busy", status=503, retry_after=1.5)),
        Failing("gone", ModelNotFound("inner")),
    ]
    async with serve_grpc(models) as address:
        yield address, recorder


@pytest.fixture
async def hop(upstream: tuple[str, Recording]) -> AsyncIterator[GrpcHop]:
    async with GrpcHop(settings(upstream[0])) as hop:
        yield hop  # type: ignore[misc]


def fp32(name: str, values: list[float]) -> InferInput:
    tensor = InferInput(name, [len(values)], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return tensor


def small(model: str = "echo") -> InferRequest:
    return InferRequest(model, [fp32("x", [1.0, 2.0])], request_id="r-2")


# Inference


async def test_every_datatype_round_trips(hop: GrpcHop) -> None:
    request = every_datatype()
    response = await hop.infer(request, {})
    assert isinstance(response, InferResponse)
    assert (response.model_name, response.id) == ("echo", "r-1")
    assert_echoed(request, response.outputs)
    # Raw contents both ways: protobuf never saw the tensor data.
    assert all(output._raw_data is not None for output in response.outputs)


async def test_the_hops_model_name_is_used(upstream: tuple[str, Recording]) -> None:
    async with GrpcHop(settings(upstream[0], model_name="recorder")) as hop:
        request = small("front")
        response = await hop.infer(request, {})
    assert response.model_name == "recorder"
    assert request.model_name == "front"  # the caller's request is left alone


async def test_v1_dict(hop: GrpcHop) -> None:
    hop = shaped(hop)
    assert await hop.infer({"instances": [[1, 2], [3, 4]]}, {}) == {"predictions": [[1, 2], [3, 4]]}
    rows = [{"a": 1.5, "b": "x"}, {"a": 2.5, "b": "y"}]
    assert await hop.infer({"instances": rows}, {}) == {"predictions": rows}


async def test_v2_dict(hop: GrpcHop) -> None:
    hop = shaped(hop)
    tensor = {"name": "x", "shape": [2], "datatype": "INT16", "data": [1, -2]}
    answer = await hop.infer({"id": "a", "inputs": [tensor]}, {})
    assert answer == {"model_name": "echo", "id": "a", "outputs": [tensor]}


async def test_payloads_it_cannot_send(hop: GrpcHop) -> None:
    # A v1 body that is not a JSON object, forwarded as it came: the client's error.
    with pytest.raises(InvalidInput, match="not JSON"):
        await hop.infer(b"bytes", {})
    with pytest.raises(InferenceError, match="not a object"):  # a transformer's bug
        await hop.infer(object(), {})
    with pytest.raises(UnsupportedProtocol):
        await hop.infer(Passthrough("v2", "echo", b"{}"), {})


async def test_explain_is_not_in_the_protocol(hop: GrpcHop) -> None:
    with pytest.raises(UnsupportedProtocol, match="explainer_host") as info:
        await hop.explain(small(), {})
    assert info.value.protocol_version == "grpc-v2"


# Passthrough


async def test_passthrough(upstream: tuple[str, Recording]) -> None:
    async with GrpcHop(settings(upstream[0])) as hop:
        assert hop.accepts_passthrough("grpc-v2", False)
        assert not hop.accepts_passthrough("v2", False)
        answer = await hop.infer(Passthrough("grpc-v2", "echo", small().to_grpc_bytes()), {})
    assert isinstance(answer, PassthroughResponse)
    assert (answer.json_length, answer.content_type) == (None, "application/grpc")
    response = InferResponse.from_grpc_bytes(answer.body)
    assert (response.model_name, response.id) == ("echo", "r-2")
    assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]


async def test_passthrough_renamed_for_the_upstream(upstream: tuple[str, Recording]) -> None:
    body = small("front").to_grpc_bytes()
    async with GrpcHop(settings(upstream[0], model_name="recorder")) as hop:
        answer = await hop.infer(Passthrough("grpc-v2", "front", body), {})
    assert InferResponse.from_grpc_bytes(answer.body).model_name == "recorder"


# Readiness


async def test_ready(hop: GrpcHop) -> None:
    assert await hop.ready() is False  # "down" is not ready, so neither is the server
    assert await hop.ready("echo") is True
    assert await hop.ready("down") is False
    assert await hop.ready("nope") is False
    async with GrpcHop(settings(f"127.0.0.1:{free_port()}")) as gone:
        assert await gone.ready() is False


# Metadata


async def test_headers_travel_as_metadata(upstream: tuple[str, Recording]) -> None:
    address, recorder = upstream
    async with GrpcHop(settings(address, model_name="recorder")) as hop:
        await hop.infer(small(), {"x-request-id": "abc", "Traceparent": "00-x"})
    assert recorder.headers["x-request-id"] == "abc"
    assert recorder.headers["traceparent"] == "00-x"


# Errors


@pytest.mark.parametrize(
    ("model", "status", "code", "message"),
    [
        ("invalid", 400, Code.INVALID_ARGUMENT, "tensor x: bad shape"),
        ("gone", 404, Code.NOT_FOUND, "model 'inner' does not exist"),
        ("nope", 404, Code.NOT_FOUND, "model 'nope' does not exist"),
    ],
)
async def test_error_status_passes_through(
    upstream: tuple[str, Recording], model: str, status: int, code: Code, message: str
) -> None:
    async with GrpcHop(settings(upstream[0], model_name=model)) as hop:
        with pytest.raises(UpstreamStatusError) as info:
            await hop.infer(small(), {})
    error = info.value
    assert (error.status, error.code, error.upstream) == (status, code, "predictor")
    if status == 404:  # what was called, at which address, and what to check
        assert str(error) == (
            f"the predictor answered 404 to ModelInfer of model {model!r} at {upstream[0]}: "
            f"{message} (does it serve the model under that name, and speak grpc-v2? "
            "--predictor_protocol sets what the gateway speaks to it)"
        )
    else:
        assert str(error) == message
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


async def test_unavailable_answer_is_a_503_with_retry_after(
    upstream: tuple[str, Recording],
) -> None:
    # The upstream answered UNAVAILABLE itself: that is its status, not a failed connect.
    async with GrpcHop(settings(upstream[0], model_name="busy")) as hop:
        with pytest.raises(UpstreamStatusError) as info:
            await hop.infer(small(), {})
    assert not isinstance(info.value, UpstreamUnavailable)
    assert (info.value.status, info.value.code, str(info.value)) == (
        503,
        Code.UNAVAILABLE,
        "predictor busy",
    )
    assert info.value.retry_after == 2.0  # the server rounds Retry-After up to seconds


async def test_connection_refused_is_unavailable() -> None:
    async with GrpcHop(settings(f"127.0.0.1:{free_port()}")) as hop:
        with pytest.raises(UpstreamUnavailable) as info:
            await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
    assert info.value.upstream == "predictor"
    assert info.value.__cause__.code() is Code.UNAVAILABLE  # type: ignore[union-attr]


async def test_slow_upstream_times_out_within_the_timeout(
    upstream: tuple[str, Recording],
) -> None:
    timeout = 0.3
    async with GrpcHop(settings(upstream[0], model_name="slow", timeout=timeout)) as hop:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"0\.300 s") as info:
            await asyncio.wait_for(hop.infer(small(), {}), timeout + MARGIN)
    assert time.monotonic() - started < timeout + MARGIN
    assert info.value.upstream == "predictor"


async def test_unreadable_answer_is_a_protocol_error() -> None:
    def garbage(request: bytes, context: Any) -> bytes:
        return b"\xff\xff\xff"  # not a ModelInferResponse

    async with serve_model_infer(garbage) as address, GrpcHop(settings(address)) as hop:
        with pytest.raises(UpstreamProtocolError, match="cannot be read"):
            await hop.infer(small(), {})
        # A pass-through body is not read here: it goes back as it came.
        answer = await hop.infer(Passthrough("grpc-v2", "echo", b""), {})
        assert answer.body == b"\xff\xff\xff"


# Deadline


async def test_deadline_shrinks_the_timeout_and_travels_on(
    upstream: tuple[str, Recording],
) -> None:
    address, recorder = upstream
    started = time.monotonic()
    async with GrpcHop(settings(address, model_name="recorder", timeout=600)) as hop:
        with deadline_in(2.5):
            await hop.infer(small(), {})
    # gRPC carries the deadline itself (grpc-timeout); our server puts it in its context.
    # Both ends share this process's clock, so the deadlines compare directly (a check of
    # what remains *now* would depend on how loaded the machine is).
    assert recorder.context is not None
    deadline = recorder.context.deadline
    assert deadline is not None
    assert started < deadline <= started + 2.5 + 0.05


async def test_deadline_cuts_a_slow_call_short(upstream: tuple[str, Recording]) -> None:
    async with GrpcHop(settings(upstream[0], model_name="slow", timeout=600)) as hop:
        started = time.monotonic()
        with deadline_in(0.3), pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
    assert time.monotonic() - started < 0.3 + MARGIN


async def test_passed_deadline_makes_no_call(upstream: tuple[str, Recording]) -> None:
    address, recorder = upstream
    async with GrpcHop(settings(address, model_name="recorder")) as hop:
        with deadline_in(-1), pytest.raises(UpstreamTimeout, match="deadline passed"):
            await hop.infer(small(), {})
    assert recorder.context is None


# Server-Timing


async def test_server_timing_is_merged(hop: GrpcHop) -> None:
    with serving() as context:
        await hop.infer(small(), {})
    assert context.upstream_timings
    assert all(entry.startswith("predictor.") for entry in context.upstream_timings)
    assert any(entry.startswith("predictor.predict;dur=") for entry in context.upstream_timings)


# TLS


async def test_tls_verified_against_the_ca_file(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    async with serve_grpc([EchoModel()], credentials=authority.grpc_credentials()) as address:
        trusted = settings(address, use_ssl=True, ca_file=authority.ca_file)
        async with GrpcHop(trusted) as hop:
            response = await hop.infer(small(), {})
            assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]
        async with GrpcHop(settings(address, use_ssl=True)) as untrusted:
            with pytest.raises(UpstreamUnavailable):
                await asyncio.wait_for(untrusted.infer(small(), {}), MARGIN)


# Channels (reconnection: test_grpc_channels.py)


async def test_one_channel_reused_and_closed(hop: GrpcHop) -> None:
    await asyncio.gather(*(hop.infer(small(), {}) for _ in range(8)))
    (replica,) = hop.pool.replicas  # one upstream: one replica, one channel
    channel = replica.client.channel
    assert channel is not None
    await hop.aclose()
    assert replica.client.channel is None
    with pytest.raises(grpc.aio.UsageError):
        await channel.unary_unary(f"/{SERVICE_NAME}/ServerLive")(b"")


async def test_a_given_channel_is_left_open(upstream: tuple[str, Recording]) -> None:
    channel = grpc.aio.insecure_channel(upstream[0], options=CHANNEL_OPTIONS)
    try:
        async with GrpcHop(settings(upstream[0]), channel) as hop:
            await hop.infer(small(), {})
        live = channel.unary_unary(
            f"/{SERVICE_NAME}/ServerLive",
            request_serializer=pb.ServerLiveRequest.SerializeToString,
            response_deserializer=pb.ServerLiveResponse.FromString,
        )
        assert (await live(pb.ServerLiveRequest())).live
    finally:
        await channel.close(None)


def test_grpc_hop_refuses_rest_settings() -> None:
    with pytest.raises(ValueError, match="grpc-v2"):
        GrpcHop(HopSettings(role="predictor", host="127.0.0.1:1", model_name="m", protocol="v2"))
