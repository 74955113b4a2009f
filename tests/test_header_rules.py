"""The header and metadata rules of both doors and of the hops (`gateway.header_rules`)."""

from __future__ import annotations

import pytest

from gateway.header_rules import (
    ALWAYS_FORWARDED,
    HOP_BY_HOP,
    grpc_response_metadata,
    http_response_header,
    usable_request_id,
    valid_grpc_metadata,
    valid_http_header,
)


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("x-tenant", "a b\tc", True),
        ("X-Tenant", "caf\u00e9", True),  # aiohttp writes it (latin-1 clients decode it)
        ("x-split", "ok\r\nSet-Cookie: stolen=1", False),
        ("x-nul", "a\x00b", False),
        ("x-bell", "\x07", False),
        ("x-del", "\x7f", False),
        ("bad key", "v", False),
        ("", "v", False),
        ("x-int", 3, False),
        (3, "v", False),
    ],
)
def test_http_headers_strict_clients_take(key: object, value: object, valid: bool) -> None:
    assert valid_http_header(key, value) is valid


def test_a_model_may_not_set_the_servers_or_the_bodys_headers_on_rest() -> None:
    for key in ("Content-Type", "content-length", "Transfer-Encoding", "connection",
                "keep-alive", "inference-header-content-length", "X-Request-Id",
                "server-timing"):  # fmt: skip
        assert not http_response_header(key, "x"), key
    # HTTP/1.1 carries connection-level names a model sets (it is the model's business).
    for key in ("x-tenant", "te", "upgrade", "host", "user-agent"):
        assert http_response_header(key, "x"), key


def test_grpc_metadata_is_lowercase_tokens_and_printable_ascii() -> None:
    assert valid_grpc_metadata("x-tenant", "a b ~")
    assert not valid_grpc_metadata("X-Tenant", "a")
    assert not valid_grpc_metadata("x-tenant", "caf\u00e9")
    assert not valid_grpc_metadata("x-tenant", "a\tb")
    assert not valid_grpc_metadata("x-data-bin", "a")  # binary: bytes, not text
    assert not valid_grpc_metadata("x-tenant", b"a")


def test_a_model_may_not_set_what_grpc_or_the_server_owns() -> None:
    for key in ("content-type", "te", "connection", "upgrade", "host", "user-agent",
                "proxy-connection", "x-request-id", "grpc-status", "grpc-message"):  # fmt: skip
        assert not grpc_response_metadata(key, "x"), key
    assert grpc_response_metadata("x-tenant", "x")
    assert not grpc_response_metadata("x-tenant", "\n")


@pytest.mark.parametrize(
    ("request_id", "usable"),
    [
        ("r-1", True),
        ("a" * 256, True),
        ("a" * 257, False),
        ("", False),
        ("caf\u00e9", False),
        ("a\nb", False),
    ],
)
def test_a_clients_request_id_is_ours_only_when_it_can_travel(
    request_id: str, usable: bool
) -> None:
    assert usable_request_id(request_id) is usable


def test_what_travels_to_upstreams() -> None:
    # Trace context in every format we know (W3C, B3 single and multi, Jaeger): with tracing
    # off it travels as it came, so the caller's trace goes on past this gateway.
    trace = {"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
             "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "uber-trace-id"}  # fmt: skip
    assert {"x-request-id", "baggage"} | trace == ALWAYS_FORWARDED
    assert not ALWAYS_FORWARDED & HOP_BY_HOP
    # Each hop frames its own body and has its own connection.
    framing = {"content-length", "content-type", "inference-header-content-length"}
    connection = {"transfer-encoding", "connection", "host", "proxy-authorization"}
    assert framing | connection <= HOP_BY_HOP
