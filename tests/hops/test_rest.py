"""`RestHop` against real upstreams on 127.0.0.1: our own server, and bare aiohttp apps and
sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway import InferInput, InferRequest, InferResponse
from gateway.codecs.rest import INFERENCE_HEADER
from gateway.errors import (
    InferenceError,
    InvalidInput,
    UnsupportedProtocol,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.hops.facts import RELEARN_PAUSE
from gateway.hops.rest import TIMEOUT_HEADER, RestHop
from gateway.hops.rest_wire import upstream_error
from gateway.hops.settings import HopSettings
from gateway.passthrough import Passthrough, PassthroughResponse
from tests.hops.upstreams import (
    assert_echoed,
    deadline_in,
    every_datatype,
    free_port,
    make_authority,
    serve_app,
    serve_rest,
    serve_socket,
    serving,
    shaped,
)
from tests.models import EchoModel

# Generous: only a hang should exceed it, never a slow machine.
MARGIN = 5.0


def settings(host: str, protocol: str = "v2", **options: Any) -> HopSettings:
    options.setdefault("model_name", "echo")
    return HopSettings(role="predictor", host=host, protocol=protocol, **options)


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    down = EchoModel("down")
    down.ready = False
    async with serve_rest([EchoModel(), down]) as address:
        yield address


@pytest.fixture
async def hop(echo: str) -> AsyncIterator[RestHop]:
    async with RestHop(settings(echo)) as hop:
        yield hop  # type: ignore[misc]


def fp32(name: str, values: list[float]) -> InferInput:
    tensor = InferInput(name, [len(values)], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return tensor


class Recorder:
    """A bare upstream that answers every request from `answer` and remembers it."""

    def __init__(self) -> None:
        # Every request but the hop's own GETs (metadata, readiness): see `gets`.
        self.requests: list[tuple[str, CIMultiDict[str], bytes]] = []
        self.gets: list[str] = []
        self.status = 200
        self.body: bytes = b'{"predictions": [1]}'
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            self.gets.append(request.raw_path)
        else:
            self.requests.append((request.raw_path, request.headers.copy(), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.body, headers=self.headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    upstream = Recorder()
    async with serve_app(upstream.app()) as address:
        yield upstream, address


# v2: every datatype, JSON and binary


@pytest.mark.parametrize("rest_format", ["json", "binary"])
async def test_every_datatype_round_trips(echo: str, rest_format: str) -> None:
    request = every_datatype()
    async with RestHop(settings(echo, rest_format=rest_format)) as hop:
        response = await hop.infer(request, {})
    assert isinstance(response, InferResponse)
    assert (response.model_name, response.id) == ("echo", "r-1")
    assert_echoed(request, response.outputs)
    # Asked for binary outputs exactly when the request went binary.
    raw = {output._raw_data is not None for output in response.outputs}
    assert raw == {rest_format == "binary"}


@pytest.mark.parametrize("extensions", [["binary_tensor_data"], []])
async def test_auto_format_is_what_the_upstream_takes(
    recorder: tuple[Recorder, str], extensions: list[str]
) -> None:
    upstream, address = recorder
    upstream.body = orjson.dumps({"name": "s", "extensions": extensions, "outputs": []})
    body, length = InferRequest("echo", [fp32("x", [1.0, 2.0])]).rest_body(True)
    arrived_raw = InferRequest.from_bytes(body, length, "echo")
    arrived_json = InferRequest("echo", [fp32("x", [1.0, 2.0])])
    async with RestHop(settings(address)) as hop:
        await hop.infer(arrived_raw, {})
        await hop.infer(arrived_json, {})
    assert upstream.gets[0] == "/v2"  # asked once, before the first request went
    binary = bool(extensions)
    for _, headers, sent in upstream.requests:
        if binary:
            assert headers["Content-Type"] == "application/octet-stream"
            assert int(headers[INFERENCE_HEADER]) < len(sent)
        else:
            assert headers["Content-Type"] == "application/json"
            assert INFERENCE_HEADER not in headers
            assert orjson.loads(sent)["inputs"][0]["data"] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("FP32", np.float32("nan")), ("FP64", np.float64("-inf")), ("BYTES", b"\xff\xfe")],
)
async def test_what_json_cannot_carry_goes_binary_anyway(
    recorder: tuple[Recorder, str], datatype: str, value: Any
) -> None:
    upstream, address = recorder
    upstream.body = b'{"name": "mlserver", "extensions": [], "outputs": []}'
    tensor = InferInput("x", [2], datatype)
    tensor.set_data_from_numpy(
        np.array([value, value], dtype=type(value) if datatype != "BYTES" else object)
    )
    async with RestHop(settings(address)) as hop:
        await hop.infer(InferRequest("echo", [tensor]), {})
    [(_, headers, sent)] = upstream.requests
    assert headers["Content-Type"] == "application/octet-stream"
    decoded = InferRequest.from_bytes(sent, int(headers[INFERENCE_HEADER]), "echo")
    assert decoded.inputs[0].wire_bytes() == tensor.wire_bytes()


async def test_forced_json_refuses_what_json_cannot_carry(
    recorder: tuple[Recorder, str],
) -> None:
    upstream, address = recorder
    tensor = InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.array([np.nan], dtype=np.float32))
    async with RestHop(settings(address, rest_format="json")) as hop:
        with pytest.raises(InvalidInput, match="NaN or infinity"):
            await hop.infer(InferRequest("echo", [tensor]), {})
    assert upstream.requests == []


async def test_an_upstream_that_does_not_say_gets_json(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.status, upstream.body = 404, b"not here"
    async with RestHop(settings(address)) as hop:
        assert (await hop.facts()).binary is False
        assert not hop.accepts_passthrough("v2", binary=True)
        assert hop.accepts_passthrough("v2", binary=False)


async def test_version_goes_in_the_path(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.body = b'{"model_name": "m", "outputs": []}'
    request = InferRequest("ignored", [fp32("x", [1.0])], model_version="3")
    async with RestHop(settings(address, model_name="m/x")) as hop:
        await hop.infer(request, {})
        await hop.explain(request, {})
    # The hop's model name (escaped), not the request's.
    assert [path for path, _, _ in upstream.requests] == [
        "/v2/models/m%2Fx/versions/3/infer",
        "/v2/models/m%2Fx/versions/3/explain",
    ]


# v1 <-> v2


async def test_v1_dict_through_a_v2_upstream(hop: RestHop) -> None:
    hop = shaped(hop)
    assert await hop.infer({"instances": [[1, 2], [3, 4]]}, {}) == {"predictions": [[1, 2], [3, 4]]}
    rows = [{"age": 31, "name": "ann"}, {"age": 40, "name": "bob"}]
    assert await hop.infer({"instances": rows}, {}) == {"predictions": rows}


async def test_v2_dict_through_a_v2_upstream(hop: RestHop) -> None:
    hop = shaped(hop)
    tensor = {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}
    answer = await hop.infer({"id": "a", "inputs": [tensor]}, {})
    assert answer == {"model_name": "echo", "id": "a", "outputs": [tensor]}


async def test_request_through_a_v1_upstream(echo: str) -> None:
    request = InferRequest("front", [fp32("x", [1.0, 2.5])], request_id="r-9")
    async with RestHop(settings(echo, protocol="v1")) as hop:
        response = await hop.infer(request, {})
        assert isinstance(response, InferResponse)
        assert (response.model_name, response.id) == ("front", "r-9")
        [output] = response.outputs
        assert (output.name, output.datatype, output.shape) == ("input-0", "FP64", [2])
        assert output.as_numpy().tolist() == [1.0, 2.5]
        # Several inputs sharing their first dimension travel as v1 rows, and come back apart.
        names = InferInput("name", [2], "BYTES")
        names.set_data_from_numpy(np.array([b"a", b"b"], dtype=object))
        two = await hop.infer(InferRequest("front", [fp32("x", [1.0, 2.0]), names]), {})
        assert [(o.name, o.as_numpy().tolist()) for o in two.outputs] == [
            ("x", [1.0, 2.0]),
            ("name", [b"a", b"b"]),
        ]
        # A request with no v1 form is the client's to fix.
        text = InferInput("t", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"\xff"], dtype=object))
        with pytest.raises(InvalidInput, match="UTF-8"):
            await hop.infer(InferRequest("front", [text]), {})


async def test_v1_dict_through_a_v1_upstream(echo: str) -> None:
    async with shaped(RestHop(settings(echo, protocol="v1"))) as hop:
        payload = {"instances": [{"a": [1, 2]}], "parameters": {"k": 1}}
        assert await hop.infer(payload, {}) == {"predictions": [{"a": [1, 2]}]}


async def test_v1_answer_without_predictions(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.body = b'{"outputs": []}'
    async with RestHop(settings(address, protocol="v1")) as hop:
        with pytest.raises(UpstreamProtocolError, match="predictions"):
            await hop.infer(InferRequest("m", [fp32("x", [1.0])]), {})


async def test_payloads_a_hop_cannot_send(hop: RestHop) -> None:
    hop = shaped(hop)
    # A v1 body that is not a JSON object, forwarded as it came: the client's error.
    with pytest.raises(InvalidInput, match=r"JSON object .* not string"):
        await hop.infer("text", {})
    with pytest.raises(InferenceError, match="not a object"):  # a transformer's bug
        await hop.infer(object(), {})
    with pytest.raises(InvalidInput, match="instances"):
        await hop.infer({"neither": 1}, {})


# explain


async def test_explain(echo: str) -> None:
    async with shaped(RestHop(settings(echo))) as v2:
        explained = await v2.explain(InferRequest("echo", [fp32("x", [1.0])]), {})
        assert explained["outputs"][0]["data"] == [1.0]
    async with shaped(RestHop(settings(echo, protocol="v1"))) as v1:
        assert await v1.explain({"instances": [1, 2]}, {}) == {"explanations": [1, 2]}
        request = InferRequest("echo", [fp32("x", [3.0])])
        assert await v1.explain(request, {}) == {"explanations": [3.0]}


# Passthrough


async def test_passthrough_v2_json_and_binary(echo: str) -> None:
    json_body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [5]}]}'
    binary_body, length = InferRequest("echo", [fp32("x", [1.0, 2.0])]).rest_body(True)
    async with RestHop(settings(echo)) as hop:
        answer = await hop.infer(Passthrough("v2", "echo", json_body), {})
        assert isinstance(answer, PassthroughResponse)
        assert answer.json_length is None
        assert answer.content_type.startswith("application/json")
        assert orjson.loads(answer.body)["outputs"][0]["data"] == [5]
        answer = await hop.infer(Passthrough("v2", "echo", binary_body, length), {})
        assert answer.content_type == "application/octet-stream"
        decoded = InferResponse.from_bytes(answer.body, answer.json_length)
        assert decoded.outputs[0].as_numpy().tolist() == [1.0, 2.0]


async def test_passthrough_v1(echo: str) -> None:
    async with RestHop(settings(echo, protocol="v1")) as hop:
        answer = await hop.infer(Passthrough("v1", "echo", b'{"instances": [[1]]}'), {})
    assert orjson.loads(answer.body) == {"predictions": [[1]]}


async def test_accepts_passthrough(echo: str) -> None:
    v1, v2 = RestHop(settings(echo, "v1")), RestHop(settings(echo, "v2"))
    as_json = RestHop(settings(echo, "v2", rest_format="json"))
    as_binary = RestHop(settings(echo, "v2", rest_format="binary"))
    async with v1, v2, as_json, as_binary:
        assert v1.accepts_passthrough("v1", False)
        assert not v1.accepts_passthrough("v2", False)
        # Binary only once the upstream (ours: binary_tensor_data) has said it takes it.
        assert v2.accepts_passthrough("v2", False)
        assert not v2.accepts_passthrough("v2", True)
        assert (await v2.facts()).binary
        assert v2.accepts_passthrough("v2", True)
        assert not v2.accepts_passthrough("grpc-v2", False)
        assert as_json.accepts_passthrough("v2", False)
        assert not as_json.accepts_passthrough("v2", True)
        assert as_binary.accepts_passthrough("v2", True)


async def test_passthrough_it_does_not_accept_is_refused(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    async with RestHop(settings(address, rest_format="json")) as hop:
        with pytest.raises(UnsupportedProtocol):
            await hop.infer(Passthrough("v2", "echo", b"{}xx", 2), {})
        with pytest.raises(UnsupportedProtocol):
            await hop.infer(Passthrough("grpc-v2", "echo", b""), {})
    assert upstream.requests == []


# Readiness


async def test_ready(echo: str) -> None:
    async with RestHop(settings(echo)) as v2, RestHop(settings(echo, "v1")) as v1:
        # "down" is not ready, so neither is the server.
        assert await v2.ready() is False
        assert await v2.ready("echo") is True
        assert await v2.ready("down") is False
        assert await v2.ready("nope") is False
        assert await v1.ready() is True
        assert await v1.ready("down") is False
    async with RestHop(settings(f"127.0.0.1:{free_port()}")) as gone:
        assert await gone.ready() is False


# Headers


async def test_headers_are_sent_as_given(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        await hop.infer({"instances": [1]}, {"x-request-id": "abc", "traceparent": "00-x"})
    _, headers, _ = upstream.requests[0]
    assert headers["x-request-id"] == "abc"
    assert headers["traceparent"] == "00-x"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept-Encoding"] == "identity"


# Errors


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, b'{"error": "tensor x: bad shape"}', "tensor x: bad shape"),
        (404, b'{"error": "model m does not exist"}', "model m does not exist"),
        (500, b"plain text failure", "plain text failure"),
        (500, b"", "the predictor answered HTTP 500"),
        (502, b"x" * 2000, "x" * 512 + "..."),
    ],
)
async def test_error_status_passes_through(
    recorder: tuple[Recorder, str], status: int, body: bytes, message: str
) -> None:
    upstream, address = recorder
    upstream.status, upstream.body = status, body
    async with RestHop(settings(address)) as hop:
        with pytest.raises(UpstreamStatusError) as info:
            await hop.infer(InferRequest("m", [fp32("x", [1.0])]), {})
    assert (info.value.status, info.value.upstream) == (status, "predictor")
    if status == 404:  # on the inference path: which URL, and what to check
        url = f"http://{address}/v2/models/echo/infer"
        assert str(info.value) == (
            f"the predictor answered 404 to POST {url}: {message} (does it serve the model "
            "under that name, and speak v2? --predictor_protocol sets what the gateway "
            "speaks to it)"
        )
    else:
        assert str(info.value) == message
    assert info.value.retry_after is None


async def test_503_with_retry_after(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.status, upstream.body = 503, b'{"error": "busy"}'
    upstream.headers = {"Retry-After": "7"}
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        with pytest.raises(UpstreamStatusError) as info:
            await hop.infer({"instances": [1]}, {})
    assert (info.value.status, str(info.value), info.value.retry_after) == (503, "busy", 7.0)


async def test_our_servers_errors_pass_through(echo: str) -> None:
    async with RestHop(settings(echo, model_name="nope")) as hop:
        with pytest.raises(UpstreamStatusError) as missing:
            await hop.infer(InferRequest("echo", [fp32("x", [1.0])]), {})
    assert missing.value.status == 404
    assert str(missing.value).endswith(
        "/v2/models/nope/infer: model 'nope' does not exist (does it serve the model under "
        "that name, and speak v2? --predictor_protocol sets what the gateway speaks to it)"
    )
    async with shaped(RestHop(settings(echo))) as hop:
        bad = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]}
        with pytest.raises(InvalidInput):  # refused before it leaves: the client's error
            await hop.infer(bad, {})


async def test_redirect_is_not_followed(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.status, upstream.headers = 302, {"Location": "/elsewhere"}
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        with pytest.raises(UpstreamProtocolError, match="302"):
            await hop.infer({"instances": [1]}, {})
    assert len(upstream.requests) == 1


async def test_connection_refused_is_unavailable() -> None:
    async with shaped(RestHop(settings(f"127.0.0.1:{free_port()}"))) as hop:
        with pytest.raises(UpstreamUnavailable) as info:
            await hop.infer({"instances": [1]}, {})
    assert info.value.upstream == "predictor"
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_slow_upstream_times_out_within_the_timeout(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.delay = 60
    timeout = 0.3
    async with shaped(RestHop(settings(address, "v1", timeout=timeout))) as hop:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await asyncio.wait_for(hop.infer({"instances": [1]}, {}), timeout + MARGIN)
        elapsed = time.monotonic() - started
    assert elapsed < timeout + MARGIN
    assert info.value.upstream == "predictor"
    assert "0.300 s" in str(info.value)


async def test_unreadable_answers_are_protocol_errors(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.body = b"<html>not json</html>"
    request = InferRequest("m", [fp32("x", [1.0])])
    async with RestHop(settings(address)) as hop:
        with pytest.raises(UpstreamProtocolError, match="cannot be read") as info:
            await hop.infer(request, {})
        assert info.value.upstream == "predictor"
        upstream.body, upstream.headers = b'{"outputs": []}', {INFERENCE_HEADER: "99"}
        with pytest.raises(UpstreamProtocolError, match=INFERENCE_HEADER):
            await hop.infer(request, {})


async def test_garbage_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    async with serve_socket(garbage) as address, shaped(RestHop(settings(address, "v1"))) as hop:
        with pytest.raises(UpstreamProtocolError, match="malformed HTTP"):
            await hop.infer({"instances": [1]}, {})


async def test_disconnect_without_an_answer_is_not_unavailable() -> None:
    # The request was delivered: the model may have run, so this must not look retryable.
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with serve_socket(hang_up) as address, shaped(RestHop(settings(address, "v1"))) as hop:
        with pytest.raises(UpstreamProtocolError, match="closed the connection") as info:
            await hop.infer({"instances": [1]}, {})
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)


# Deadline


async def test_deadline_shrinks_the_timeout_and_travels_on(
    recorder: tuple[Recorder, str],
) -> None:
    upstream, address = recorder
    async with shaped(RestHop(settings(address, "v1", timeout=600))) as hop:
        with deadline_in(2.5):
            await hop.infer({"instances": [1]}, {})
        with serving():
            await hop.infer({"instances": [1]}, {})
    sent = [float(headers[TIMEOUT_HEADER]) for _, headers, _ in upstream.requests]
    assert 0 < sent[0] <= 2.5
    assert sent[1] == 600


async def test_deadline_cuts_a_slow_call_short(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.delay = 60
    async with shaped(RestHop(settings(address, "v1", timeout=600))) as hop:
        started = time.monotonic()
        with deadline_in(0.3), pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(hop.infer({"instances": [1]}, {}), MARGIN)
    assert time.monotonic() - started < 0.3 + MARGIN


async def test_passed_deadline_makes_no_call(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        with deadline_in(-1), pytest.raises(UpstreamTimeout, match="deadline passed"):
            await hop.infer({"instances": [1]}, {})
    assert upstream.requests == []


# Server-Timing


async def test_server_timing_is_merged(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.headers = {"Server-Timing": 'preprocess;dur=1.2, predict;dur=3;desc="a, b"'}
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        with serving() as context:
            await hop.infer({"instances": [1]}, {})
        # Outside a request there is nowhere to put them, and nothing fails.
        await hop.infer({"instances": [1]}, {})
    assert context.upstream_timings == [
        "predictor.preprocess;dur=1.2",
        'predictor.predict;dur=3;desc="a, b"',
    ]


async def test_server_timing_of_an_error_is_kept(recorder: tuple[Recorder, str]) -> None:
    upstream, address = recorder
    upstream.status, upstream.headers = 503, {"Server-Timing": "queue;dur=9"}
    async with shaped(RestHop(settings(address, "v1"))) as hop:
        with serving() as context, pytest.raises(UpstreamStatusError):
            await hop.infer({"instances": [1]}, {})
    assert context.upstream_timings == ["predictor.queue;dur=9"]


async def test_server_timing_of_our_own_server(hop: RestHop) -> None:
    with serving() as context:
        await hop.infer(InferRequest("echo", [fp32("x", [1.0])]), {})
    assert any(t.startswith("predictor.predict;dur=") for t in context.upstream_timings)


# TLS


async def test_tls_verified_against_the_ca_file(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    app = web.Application()
    app.router.add_post("/v1/models/echo:predict", _echo_v1)
    async with serve_app(app, ssl_context=authority.server_context()) as address:
        trusted = settings(address, "v1", use_ssl=True, ca_file=authority.ca_file)
        async with shaped(RestHop(trusted)) as hop:
            assert await hop.infer({"instances": [1]}, {}) == {"predictions": [1]}
        # Not signed by a CA the system trusts: refused, and nothing was sent.
        async with shaped(RestHop(settings(address, "v1", use_ssl=True))) as untrusted:
            with pytest.raises(UpstreamUnavailable) as info:
                await untrusted.infer({"instances": [1]}, {})
        assert isinstance(info.value.__cause__, aiohttp.ClientSSLError)
        # An https URL means TLS without use_ssl.
        url = settings(f"https://{address}", "v1", ca_file=authority.ca_file)
        async with shaped(RestHop(url)) as hop:
            assert await hop.infer({"instances": [2]}, {}) == {"predictions": [2]}


async def _echo_v1(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"predictions": body["instances"]})


def test_missing_ca_file_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RestHop(settings("127.0.0.1:1", use_ssl=True, ca_file=str(tmp_path / "none.pem")))


# Connections


async def test_upstream_restarted_on_the_same_port_is_reached_again() -> None:
    port = free_port()
    request = InferRequest("echo", [fp32("x", [1.0])])
    async with RestHop(settings(f"127.0.0.1:{port}")) as hop:
        async with serve_rest([EchoModel()], port):
            assert (await hop.infer(request, {})).outputs[0].as_numpy().tolist() == [1.0]
        # A restart takes far longer than this: the pool sees its connections close.
        await asyncio.sleep(0.2)
        with pytest.raises(UpstreamUnavailable):
            await hop.infer(request, {})
        async with serve_rest([EchoModel()], port):
            response = await hop.infer(request, {})
        assert response.outputs[0].as_numpy().tolist() == [1.0]


async def test_the_format_is_learned_again_after_the_upstream_restarts() -> None:
    """Ours (binary_tensor_data) goes down and comes back on the same port as a server
    without the extension (MLServer, say): the next request goes as JSON."""
    port = free_port()
    request = InferRequest("echo", [fp32("x", [1.0])])
    async with RestHop(settings(f"127.0.0.1:{port}")) as hop:
        async with serve_rest([EchoModel()], port):
            await hop.infer(request, {})
            assert (await hop.facts()).binary
            assert hop.accepts_passthrough("v2", binary=True)
        await asyncio.sleep(0.2)  # the pool sees its connections close
        with pytest.raises(UpstreamUnavailable):
            await hop.infer(request, {})
        upstream = Recorder()
        upstream.body = b'{"name": "mlserver", "extensions": [], "outputs": []}'
        async with serve_app(upstream.app(), port):
            await asyncio.sleep(RELEARN_PAUSE)  # the failed learning's pause is over
            await hop.infer(request, {})
            assert not hop.accepts_passthrough("v2", binary=True)
    assert upstream.gets[0] == "/v2"
    [(_, headers, sent)] = upstream.requests
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(sent)["inputs"][0]["data"] == [1.0]


async def test_one_pooled_session_reused_and_closed(echo: str) -> None:
    hop = RestHop(settings(echo, max_connections=2))
    request = InferRequest("echo", [fp32("x", [1.0])])
    await asyncio.gather(*(hop.infer(request, {}) for _ in range(8)))
    session = hop._session
    assert session is not None
    assert session.connector is not None
    assert session.connector.limit == 2
    await hop.aclose()
    assert session.closed
    assert hop._session is None


async def test_a_given_session_is_left_open(echo: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with RestHop(settings(echo), session) as hop:
            await hop.infer(InferRequest("echo", [fp32("x", [1.0])]), {})
        assert not session.closed


def test_error_table() -> None:
    # Connect errors are covered against a closed port above.
    cases: list[tuple[BaseException, type[Exception]]] = [
        (
            aiohttp.ClientOSError(None, "Can not write request body for http://h/"),
            UpstreamUnavailable,
        ),
        (asyncio.TimeoutError(), UpstreamTimeout),
        (aiohttp.ServerTimeoutError("read"), UpstreamTimeout),
        (aiohttp.ServerDisconnectedError(), UpstreamProtocolError),
        (aiohttp.ClientOSError(104, "reset by peer"), UpstreamProtocolError),
        (aiohttp.ClientPayloadError("cut"), UpstreamProtocolError),
        (ConnectionResetError(), UpstreamProtocolError),
    ]
    for exc, expected in cases:
        error = upstream_error(exc, "explainer", 1.0)
        assert type(error) is expected, exc
        assert error.upstream == "explainer"


def test_rest_hop_refuses_grpc_settings() -> None:
    with pytest.raises(ValueError, match="v1 or v2"):
        RestHop(settings("127.0.0.1:1", "grpc-v2"))
