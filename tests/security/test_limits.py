"""Resource limits against hostile clients: bodies over the limit are refused before they are
read, absurd shapes before anything of their size is allocated, slow bodies time out (and
lose their connection), slow headers are cut off, headers and messages have bounds, and
requests beyond ``max_concurrency`` are refused at once.
"""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import grpc
import orjson
import pytest

from gateway._proto import pb
from gateway.settings import ServerSettings
from tests.security.harness import (
    BODY_TIMEOUT,
    GOOD_V2,
    GRPC_MAX_RECEIVE,
    HOST,
    KEEPALIVE_TIMEOUT,
    MAX_BODY,
    GatedModel,
    Gateway,
    LogCapture,
    check_answer,
    read_answer,
    request_bytes,
    wait_closed,
)

INFER = "/v2/models/echo/infer"
# Slack for a loaded machine: only a hang, or a server waiting for the wrong thing, exceeds it.
SLACK = 5.0


# Bodies over the limit


@pytest.mark.parametrize("declared", [MAX_BODY + 1, 10**12, 2**63 - 1])
@pytest.mark.parametrize("expect", [False, True])
def test_a_body_over_the_limit_is_refused_before_it_is_sent(
    gateway: Gateway, declared: int, expect: bool
) -> None:
    headers = {"Content-Length": str(declared), "Content-Type": "application/json"}
    if expect:  # a careful client waits to be invited
        headers["Expect"] = "100-continue"
    with gateway.connect() as sock:
        # The headers only: not one byte of the body is ever sent. Were the server waiting
        # for it, the answer would be a 408 after the body timeout.
        sock.sendall(request_bytes("POST", INFER, b"", headers, content_length=False))
        first = sock.recv(12, socket.MSG_PEEK)
        assert first == b"HTTP/1.1 413", first  # no "100 Continue" invitation first
        answer = read_answer(sock)
    assert answer.status == 413
    assert f"the limit is {MAX_BODY}" in answer.json()["error"]
    assert answer.closed
    gateway.assert_rest_serving()


def test_a_chunked_body_is_cut_at_the_limit_without_holding_it(
    gateway: Gateway, allocation_peak: Callable[[], int]
) -> None:
    chunk = b" " * 65536
    sent = 0
    with gateway.connect() as sock:
        head = (
            "POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        try:
            while sent < 256 * MAX_BODY:  # 16 MiB offered, the limit is 64 KiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed while we were still sending
        answer = read_answer(sock)
    assert answer.status == 413, answer
    check_answer(answer)
    # What was held (servers and client together) is bounded, far below what was offered.
    assert allocation_peak() < 4 << 20
    gateway.assert_rest_serving()


def test_a_compressed_body_is_limited_by_its_decoded_size(
    gateway: Gateway, allocation_peak: Callable[[], int]
) -> None:
    bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB in about 64 KiB
    assert len(bomb) < MAX_BODY
    tracemalloc.reset_peak()  # what it took to make it is not the server's
    answer = gateway.http("POST", INFER, bomb, {"Content-Encoding": "gzip"})
    assert answer.status == 413, answer
    check_answer(answer)
    assert allocation_peak() < 8 << 20
    gateway.assert_rest_serving()


def test_a_grpc_message_over_the_limit(gateway: Gateway) -> None:
    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="x", datatype="UINT8", shape=[GRPC_MAX_RECEIVE])
    message.raw_input_contents.append(b"\x00" * GRPC_MAX_RECEIVE)
    code, details, _ = gateway.grpc_call("ModelInfer", message.SerializeToString())
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, details
    gateway.assert_grpc_serving()


# Absurd shapes

ABSURD_SHAPES = [
    [2**40],
    [2**31, 2**31],
    [2**62, 0],
    [2**63 - 1],
    [2**20] * 5,
    [1] * 33,
    [2] * 32,
    [1] * 1000,
]


def _rest_json(shape: list[int], datatype: str) -> tuple[bytes, dict[str, str]]:
    entry = {"name": "wide", "shape": shape, "datatype": datatype, "data": [1]}
    return orjson.dumps({"inputs": [entry]}), {}


def _rest_binary(shape: list[int], datatype: str) -> tuple[bytes, dict[str, str]]:
    params = {"binary_data_size": 4}
    entry = {"name": "wide", "shape": shape, "datatype": datatype, "parameters": params}
    head = orjson.dumps({"inputs": [entry]})
    return head + b"\x01\x00\x00\x00", {"Inference-Header-Content-Length": str(len(head))}


def _grpc(shape: list[int], datatype: str, typed: bool) -> bytes:
    message = pb.ModelInferRequest(model_name="echo")
    tensor = message.inputs.add(name="wide", datatype=datatype, shape=shape)
    if typed:
        field = "bytes_contents" if datatype == "BYTES" else "int_contents"
        getattr(tensor.contents, field).extend([b"a"] if datatype == "BYTES" else [1])
    else:
        message.raw_input_contents.append(b"\x01\x00\x00\x00")
    return message.SerializeToString()


@pytest.mark.parametrize("shape", ABSURD_SHAPES, ids=lambda s: f"{len(s)}dims-max{max(s)}")
@pytest.mark.parametrize("datatype", ["INT32", "BYTES"])
def test_an_absurd_shape_is_refused_before_allocation(
    gateway: Gateway, shape: list[int], datatype: str, allocation_peak: Callable[[], int]
) -> None:
    for build in (_rest_json, _rest_binary):
        body, headers = build(shape, datatype)
        answer = gateway.http("POST", INFER, body, headers)
        assert answer.status == 400, answer
        assert "tensor 'wide'" in answer.json()["error"]
    for typed in (False, True):
        code, details, _ = gateway.grpc_call("ModelInfer", _grpc(shape, datatype, typed))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, details
        assert isinstance(details, str)
        assert "tensor 'wide'" in details
    # Gigabytes to exabytes declared; refusing them took (servers and clients together) no
    # more than a megabyte or two.
    assert allocation_peak() < 2 << 20
    gateway.assert_rest_serving()
    gateway.assert_grpc_serving()


def test_a_huge_declared_binary_size_is_refused_without_allocating_it(
    gateway: Gateway, allocation_peak: Callable[[], int]
) -> None:
    for size in (2**31, 2**40, 2**63):
        params = {"binary_data_size": size}
        entry = {"name": "big", "shape": [size], "datatype": "UINT8", "parameters": params}
        head = orjson.dumps({"inputs": [entry]})
        answer = gateway.http(
            "POST", INFER, head + b"\x00" * 16, {"Inference-Header-Content-Length": str(len(head))}
        )
        assert answer.status == 400, answer
    assert allocation_peak() < 2 << 20


# Slow bodies


def _trickle(sock: socket.socket, data: bytes, interval: float, until: float) -> None:
    """Send `data` a byte at a time until `until` (monotonic), or the server hangs up."""
    for byte in data:
        if time.monotonic() >= until:
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(interval)


@pytest.mark.parametrize("how", ["trickle", "stall", "chunked-trickle"])
def test_a_slow_body_gets_408_within_the_timeout_and_loses_its_connection(
    gateway: Gateway, how: str
) -> None:
    body = json.dumps(GOOD_V2).encode()
    chunked = how == "chunked-trickle"
    headers = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(body))}
    with gateway.connect() as sock:
        started = time.monotonic()
        sock.sendall(request_bytes("POST", INFER, b"", headers, content_length=False))
        if how == "stall":
            sock.sendall(body[:10])  # and then nothing
        else:
            payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
            sender = threading.Thread(
                target=_trickle, args=(sock, payload, 0.05, started + 4 * BODY_TIMEOUT)
            )
            sender.start()
        answer = read_answer(sock)
        answered = time.monotonic() - started
        # Closed right after the answer: no lingering over the rest of the trickle.
        closed_after = wait_closed(sock, within=SLACK)
        if how != "stall":
            sender.join()
    assert answer.status == 408, answer
    check_answer(answer)
    assert f"within {BODY_TIMEOUT:g} s" in answer.json()["error"]
    assert answer.closed
    assert BODY_TIMEOUT <= answered < BODY_TIMEOUT + SLACK
    assert closed_after < 2.0  # aiohttp alone would linger over the body for 10 s
    gateway.assert_rest_serving()


def test_a_client_that_leaves_mid_body_is_no_server_error(
    gateway: Gateway, logs: LogCapture
) -> None:
    for _ in range(5):
        with gateway.connect() as sock:
            sock.sendall(
                request_bytes("POST", INFER, b"", {"Content-Length": "1000"}, content_length=False)
            )
            sock.sendall(b'{"inputs": [')
            time.sleep(0.1)  # the handler is reading the body
            # Reset rather than close: the server sees the connection lost at once.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    gateway.assert_rest_serving()
    deadline = time.monotonic() + SLACK
    while 'code="499",model_name="echo"' not in (metrics := _metrics(gateway)):
        assert time.monotonic() < deadline, metrics  # nginx's "client closed request"
        time.sleep(0.01)
    assert 'code="500",model_name="echo"' not in metrics
    # Not logged as a failure of the server (with a traceback) each time.
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logs.text()


def _metrics(gateway: Gateway) -> str:
    return gateway.metrics.exposition()[0].decode()


# Slow and large headers


def test_slow_headers_are_cut_off_by_the_keepalive_timeout(gateway: Gateway) -> None:
    """aiohttp has no timeout of its own for reading a request's headers, but it starts its
    keep-alive timer when a connection opens and does not restart it while headers trickle
    in: a request whose headers are not complete within the keep-alive timeout (the
    gateway's --timeout-keep-alive) loses its connection, answered or not."""
    with gateway.connect() as sock:
        started = time.monotonic()
        head = b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        sender = threading.Thread(
            target=_trickle, args=(sock, head, 0.05, started + KEEPALIVE_TIMEOUT + SLACK)
        )
        sender.start()
        closed = wait_closed(sock, within=KEEPALIVE_TIMEOUT + SLACK)
        sender.join()
    assert KEEPALIVE_TIMEOUT * 0.9 <= closed < KEEPALIVE_TIMEOUT + SLACK
    gateway.assert_rest_serving()


def test_slow_headers_of_a_second_request_on_a_kept_connection(gateway: Gateway) -> None:
    body = json.dumps(GOOD_V2).encode()
    with gateway.connect() as sock:
        sock.sendall(request_bytes("POST", INFER, body))
        assert read_answer(sock).status == 200
        started = time.monotonic()
        sock.sendall(b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\n")  # and no more
        closed = wait_closed(sock, within=KEEPALIVE_TIMEOUT + SLACK)
    assert closed < KEEPALIVE_TIMEOUT + SLACK
    assert time.monotonic() - started >= KEEPALIVE_TIMEOUT * 0.9


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"X-Long": "a" * 8191}, "LineTooLong"),
        ({f"X-H{i}": "v" for i in range(129)}, "Too many headers"),
    ],
    ids=["a header line over 8190 bytes", "more than 128 headers"],
)
def test_header_limits(
    gateway: Gateway, logs: LogCapture, headers: dict[str, str], problem: str
) -> None:
    """aiohttp's bounds: lines (request line and each header) of 8190 bytes, 128 headers,
    so a request's head is at most about 1 MiB. Over them, aiohttp's own 400, and the
    connection closes."""
    answer = gateway.http("POST", INFER, json.dumps(GOOD_V2).encode(), headers)
    assert answer.status == 400, answer
    check_answer(answer)
    assert answer.closed
    gateway.assert_rest_serving()


def test_a_request_line_over_the_limit(gateway: Gateway) -> None:
    answer = gateway.http("GET", "/v2/models/" + "a" * 9000)
    assert answer.status == 400
    check_answer(answer)


# Backpressure


def test_requests_beyond_max_concurrency_are_refused_at_once() -> None:
    gated = GatedModel()
    settings = ServerSettings(listen_address=HOST, max_concurrency=2)
    server = Gateway(settings, [gated]).start()
    held: list[Any] = []
    try:
        body = json.dumps(GOOD_V2).encode()
        for _ in range(2):
            sock = server.connect()
            sock.sendall(request_bytes("POST", "/v2/models/gated/infer", body))
            held.append(sock)
        deadline = time.monotonic() + SLACK
        while gated.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gated.waiting == 2
        answer = server.http("POST", "/v2/models/gated/infer", body)
        assert answer.status == 503, answer
        assert answer.header("Retry-After") == "1"
        assert "the limit is 2" in answer.json()["error"]
        message = pb.ModelInferRequest(model_name="gated").SerializeToString()
        code, details, _ = server.grpc_call("ModelInfer", message)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, details
        server.soon(gated.gate.set)
        for sock in held:
            assert read_answer(sock).status == 200
        assert server.http("POST", "/v2/models/gated/infer", body).status == 200
    finally:
        for sock in held:
            sock.close()
        server.stop()
