"""`Forwarding` / `outbound`: which inbound headers travel on to an upstream."""

from __future__ import annotations

from gateway.hops.headers import outbound
from gateway.hops.settings import HopSettings


def test_headers_named_in_connection_are_not_forwarded() -> None:
    settings = HopSettings(
        role="predictor", host="h:1", model_name="m", forward_headers=frozenset({"x-tenant"})
    )
    headers = {"Connection": "keep-alive, X-Tenant", "x-tenant": "a", "x-request-id": "r"}
    assert outbound(headers, settings) == {"x-request-id": "r"}
    assert outbound({"x-tenant": "a"}, settings) == {"x-tenant": "a"}
