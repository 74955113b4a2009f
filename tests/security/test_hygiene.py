"""Security hygiene: credentials stay out of logs and answers, the access log holds no
bodies, internal errors say nothing of the internals, and TLS to upstreams is verified
unless the operator says which CA to trust.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from gateway import InferInput, InferRequest
from gateway.errors import UpstreamUnavailable
from gateway.flags import parser
from gateway.model import Model
from gateway.model_server import ModelServer
from gateway.settings import ServerSettings
from gateway.wiring import connect, disconnect
from tests.hops.upstreams import make_authority, serve_app, serve_grpc
from tests.models import EchoModel
from tests.security.harness import (
    CREDENTIALS,
    GOOD_V2,
    HOST,
    INTERNALS,
    MAX_BODY,
    SECRET,
    Answer,
    Gateway,
    LogCapture,
    read_answer,
    request_bytes,
)

GOOD = json.dumps(GOOD_V2).encode()
V1 = json.dumps({"instances": [1, 2]}).encode()
# Requests that succeed and that fail in every way a REST client can make them fail.
REST_CASES = [
    ("POST", "/v2/models/echo/infer", GOOD, {}),  # 200, with the latency log line
    ("POST", "/v1/models/echo:predict", V1, {}),  # 200
    ("POST", "/v2/models/echo/infer", b'{"inputs": [', {}),  # 400: not JSON
    ("POST", "/v2/models/echo/infer", GOOD, {"Inference-Header-Content-Length": "x"}),  # 400
    ("POST", "/v2/models/echo/infer", GOOD, {"x-request-timeout": "-1"}),  # 400
    ("POST", "/v1/models/echo:predict", V1, {"ce-specversion": "1.0"}),  # 400: bad event
    ("POST", "/v2/models/nothere/infer", GOOD, {}),  # 404
    ("GET", "/v2/models/echo/infer", b"", {}),  # 405
    ("POST", "/v2/models/echo/infer", b"", {"Content-Length": str(MAX_BODY + 1)}),  # 413
    ("POST", "/v2/models/boom/infer", GOOD, {}),  # 500: a bug, logged with its traceback
    ("POST", "/v2/models/gone/infer", GOOD, {}),  # 503: upstream down, retried, logged
]


def assert_no_secret(answer: Answer) -> None:
    for key, value in answer.headers:
        assert SECRET not in key
        assert SECRET not in value, (key, value)
    assert SECRET.encode() not in answer.body, answer


@pytest.mark.parametrize(("method", "path", "body", "headers"), REST_CASES)
def test_rest_credentials_are_never_logged_nor_echoed(
    gateway: Gateway,
    logs: LogCapture,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> None:
    with gateway.connect() as sock:
        sock.sendall(request_bytes(method, path, body, {**CREDENTIALS, **headers}))
        answer = read_answer(sock, method)
    assert_no_secret(answer)
    logs.wait_for("aiohttp.access")
    assert SECRET not in logs.text()


def test_the_cases_above_log_what_they_should(gateway: Gateway, logs: LogCapture) -> None:
    """The test above is only as good as what is logged while it runs: every kind of line."""
    for method, path, body, headers in REST_CASES:
        gateway.http(method, path, body, {**CREDENTIALS, **headers})
    logs.wait_for("aiohttp.access", len(REST_CASES))
    names = {record.name for record in logs.records}
    assert {"aiohttp.access", "gateway.model", "gateway.server.rest", "gateway.hops"} <= names
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert any(r.exc_info for r in errors)  # the 500's traceback
    assert "requestId:" in logs.text()  # the latency line


@pytest.mark.parametrize(
    "line",
    [
        b"Authorization: Bearer " + SECRET.encode() + b"\x01",
        b"Cookie: s=" + SECRET.encode() + b"\x00",
        b"X-Api-Key: " + SECRET.encode() + b"A" * 9000,
        b"Authorization : Bearer " + SECRET.encode(),
    ],
    ids=["control character", "NUL", "too long", "space before the colon"],
)
def test_a_malformed_credential_header_is_not_logged(
    gateway: Gateway, logs: LogCapture, line: bytes
) -> None:
    """aiohttp refuses the request (its plain-text 400 quotes the offending line to the client
    that sent it); its log line says only who sent what kind of error."""
    answer = gateway.raw(
        b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n%s\r\nContent-Length: %d\r\n\r\n%s"
        % (line, len(GOOD), GOOD)
    )
    assert answer.status == 400
    assert answer.closed
    logs.wait_for("aiohttp.access")
    assert SECRET not in logs.text()
    (record,) = logs.named("gateway.server.http")
    assert record.getMessage().startswith("malformed HTTP request from 127.0.0.1: 400 ")
    assert record.exc_info is None
    gateway.assert_rest_serving()


GRPC_CREDENTIALS = [(key.lower(), value) for key, value in CREDENTIALS.items()]


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("echo", grpc.StatusCode.OK),
        ("nothere", grpc.StatusCode.NOT_FOUND),
        ("bad", grpc.StatusCode.INVALID_ARGUMENT),
        ("boom", grpc.StatusCode.INTERNAL),
        ("gone", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_grpc_credentials_are_never_logged_nor_echoed(
    gateway: Gateway, logs: LogCapture, model: str, code: grpc.StatusCode
) -> None:
    if model == "bad":
        data = b"\x0a\x02\xff\xfe"  # a model name that is not UTF-8
    else:
        tensor = InferInput("x", [2], "FP32", data=[1.0, 2.0])
        data = InferRequest(model, [tensor]).to_grpc_bytes()
    got, details, metadata = gateway.grpc_call("ModelInfer", data, GRPC_CREDENTIALS)
    assert got is code, details
    assert SECRET not in str(details)
    for key, value in metadata:
        assert SECRET not in f"{key}: {value}"
    assert SECRET not in logs.text()


@pytest.mark.parametrize(
    "access_log_format",
    [None, '%(h)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'],
    ids=["the default line", "KServe's format"],
)
def test_the_access_log_holds_no_bodies_nor_credentials(
    logs: LogCapture, access_log_format: str | None
) -> None:
    settings = ServerSettings(listen_address=HOST, access_log_format=access_log_format)
    server = Gateway(settings, [EchoModel()]).start()
    try:
        marker = "body-marker-7f3a"
        document = {"inputs": [{"name": marker, "shape": [1], "datatype": "BYTES",
                                "data": [marker]}]}  # fmt: skip
        for path in ("/v2/models/echo/infer", "/v2/models/nothere/infer"):
            answer = server.http("POST", path, json.dumps(document).encode(), CREDENTIALS)
            assert answer.status in (200, 404)
        records = logs.wait_for("aiohttp.access", 2)
    finally:
        server.stop()
    lines = [record.getMessage() for record in records]
    assert len(lines) == 2, lines
    for line in lines:
        assert marker not in line
        assert SECRET not in line
        assert '"POST /v2/models/' in line


def test_internal_errors_say_nothing_of_the_internals(gateway: Gateway, logs: LogCapture) -> None:
    answer = gateway.http("POST", "/v2/models/boom/infer", GOOD)
    assert answer.status == 500
    assert answer.json() == {"error": "internal error: RuntimeError"}
    tensor = InferInput("x", [2], "FP32", data=[1.0, 2.0])
    code, details, _ = gateway.grpc_call(
        "ModelInfer", InferRequest("boom", [tensor]).to_grpc_bytes()
    )
    assert code is grpc.StatusCode.INTERNAL
    assert details == "internal error: RuntimeError"
    # The operator's log has it all.
    failures = [r for r in logs.records if r.exc_info and INTERNALS in str(r.exc_info[1])]
    assert {r.name for r in failures} == {"gateway.server.rest", "gateway.server.grpc"}


# TLS to upstreams


async def _echo_v1(request: web.Request) -> web.Response:
    return web.json_response({"predictions": (await request.json())["instances"]})


def _server(*flags: str) -> ModelServer:
    return ModelServer(args=parser.parse_args(["--configure_logging", "false", *flags]))


async def _infer_through(server: ModelServer, protocol: str) -> object:
    model = Model("echo")
    hops = connect(model, server.upstreams, server.predictor_config, metrics=None)
    try:
        assert model.predictor_hop is not None
        if protocol == "v1":
            return await model.predictor_hop.infer({"instances": [1]}, {})
        request = InferRequest("echo", [InferInput("x", [1], "FP32", data=[1.0])])
        return await model.predictor_hop.infer(request, {})
    finally:
        await disconnect(model, hops)


@pytest.mark.parametrize("protocol", ["v1", "grpc-v2"])
async def test_upstream_tls_is_verified_by_default(tmp_path: Path, protocol: str) -> None:
    """With only ``--predictor_use_ssl true`` (or an https:// host), a predictor whose
    certificate no system CA signed is refused before anything is sent; naming its CA with
    ``--predictor_ca_file`` is the one way to trust it. No flag turns verification off."""
    authority = make_authority(tmp_path)
    app = web.Application()
    app.router.add_post("/v1/models/echo:predict", _echo_v1)
    if protocol == "v1":
        upstream = serve_app(app, ssl_context=authority.server_context())
    else:
        upstream = serve_grpc([EchoModel()], credentials=authority.grpc_credentials())
    async with upstream as address:
        base = ["--predictor_protocol", protocol, "--predictor_request_timeout_seconds", "10"]
        hosts = [["--predictor_host", address, "--predictor_use_ssl", "true"]]
        if protocol == "v1":
            hosts.append(["--predictor_host", f"https://{address}"])
        for host in hosts:
            started = time.monotonic()
            with pytest.raises(UpstreamUnavailable):
                await _infer_through(_server(*base, *host), protocol)
            assert time.monotonic() - started < 10  # refused, not timed out
            trusted = _server(*base, *host, "--predictor_ca_file", authority.ca_file)
            assert await _infer_through(trusted, protocol)
