"""Header injection, both ways.

Upstream: `gateway.hops.headers.outbound` is the one gate every forwarded header passes. For
any inbound headers and any operator settings it passes on exactly the allowed ones, never a
hop-by-hop header or one named in Connection, never credentials that were not asked for, and
refuses (400) a value with CR or LF rather than forward it. (That clients cannot send such a
value at all, and that a transformer's forged one is refused before anything is sent, is
tested end to end in tests/e2e/test_headers.py.)

Downstream: response headers a model sets go out only when they are one valid header each;
the rest are dropped, never splitting the response or failing it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.errors import InvalidInput
from gateway.header_rules import ALWAYS_FORWARDED as ALWAYS
from gateway.header_rules import HOP_BY_HOP
from gateway.hops.headers import outbound
from gateway.hops.settings import HopSettings
from tests.security.harness import Gateway, fuzzing
from tests.security.strategies import header_names

CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie", "x-api-key"]
NOTABLE = sorted(
    {*ALWAYS, *HOP_BY_HOP, *CREDENTIAL_HEADERS, "x-tenant", "content-type", "set-cookie"}
)
names = (st.sampled_from(NOTABLE) | header_names).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title()])
)
values = st.text(max_size=12) | st.sampled_from(
    ["a\r\nx-injected: 1", "a\rb", "a\nb", "\r\n", "x-tenant, cookie", "close"]
)


@fuzzing(6)
@given(
    st.dictionaries(names, values, max_size=8),
    st.frozensets(st.sampled_from(NOTABLE) | header_names.map(str.lower), max_size=4),
    st.booleans(),
)
@example({"Authorization": "Bearer t", "Cookie": "c=1"}, frozenset(), False)
@example({"X-Tenant": "a\r\nx-injected: 1"}, frozenset({"x-tenant"}), False)
@example({"Connection": "x-tenant", "X-Tenant": "a"}, frozenset({"x-tenant"}), False)
@example({"Connection": "cookie", "Cookie": "a\r\nx-injected: 1"}, frozenset({"cookie"}), False)
@example({"BAGGAGE": "a\r\nx-injected: 1", "baggage": ""}, frozenset(), False)
@example(
    {"Connection": "cookie", "connection": "x-tenant", "Cookie": "c"}, frozenset({"cookie"}), False
)
@example({"Proxy-Authorization": "Basic p"}, frozenset({"proxy-authorization"}), True)
def test_outbound_passes_exactly_the_allowed_headers(
    headers: dict[str, str], forward: frozenset[str], forward_authorization: bool
) -> None:
    settings = HopSettings(
        role="predictor",
        host="upstream:80",
        model_name="m",
        forward_headers=forward,
        forward_authorization=forward_authorization,
    )
    allowed = ALWAYS | forward | ({"authorization"} if forward_authorization else set())
    named = {
        token.strip().lower()
        for key, value in headers.items()
        if key.lower() == "connection"
        for token in value.split(",")
    }
    expected: dict[str, str] = {}
    line_break = False
    for key, value in headers.items():
        name = key.lower()
        if name in allowed and name not in HOP_BY_HOP and name not in named:
            expected[name] = value
            line_break |= "\r" in value or "\n" in value
    if line_break:
        with pytest.raises(InvalidInput, match="contains a line break"):
            outbound(headers, settings)
        return
    sent = outbound(headers, settings)
    assert sent == expected
    # Spelled out, what the oracle above implies:
    assert not set(sent) & HOP_BY_HOP  # Proxy-Authorization among them, whatever is listed
    # Authorization only when the operator said so (the flag, or naming it in the list).
    assert "authorization" not in sent or forward_authorization or "authorization" in forward
    for credential in ("cookie", "x-api-key"):
        assert credential not in sent or credential in forward
    for value in sent.values():
        assert "\r" not in value
        assert "\n" not in value


# Response headers a model sets

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers our server sets itself, and aiohttp's.
SERVER_HEADERS = {"content-type", "content-length", "x-request-id", "server-timing", "date",
                  "server", "connection"}  # fmt: skip
RESERVED = {"content-type", "content-length", "transfer-encoding", "connection", "keep-alive",
            "inference-header-content-length", "x-request-id", "server-timing"}  # fmt: skip
# Characters a header value may not hold (RFC 9110 5.5): controls other than HTAB.
CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

header_keys = header_names | st.text(max_size=10) | st.sampled_from(sorted(RESERVED))
header_values = st.text(max_size=12) | st.sampled_from(
    ["ok\r\nSet-Cookie: stolen=1", "a\rb", "a\nb", "\x00", "tab\there", "caf\u00e9", "\u2028"]
)


@fuzzing(3)
@given(st.dictionaries(header_keys, header_values | st.integers(), max_size=5))
@example({"X-Split": "ok\r\nSet-Cookie: stolen=1", "X-Fine": "yes"})
@example({"Content-Length": "0", "x-request-id": "mine", "Connection": "close"})
@example({"X-Nul": "a\x00b", "X-Bell": "\x07"})
def test_response_headers_a_model_sets(gateway: Gateway, headers: dict[str, Any]) -> None:
    body = json.dumps({"inputs": [], "parameters": headers}).encode()
    with gateway.connect() as sock:
        sock.sendall(
            b"POST /v2/models/headers/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            assert chunk, raw
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0].startswith(b"HTTP/1.1 200 "), head
    received: dict[str, bytes] = {}
    for line in head[1:]:
        name, sep, value = line.partition(b":")
        assert sep, line
        # One header per line, and a value any strict HTTP parser takes.
        assert _TOKEN.fullmatch(name.decode("latin-1")), line
        assert not CONTROLS.search(value.decode("latin-1").strip(" \t")), line
        received[name.decode().lower()] = value.strip(b" \t")
    expected = {}  # names differing only in case: the last one set wins
    for key, value in headers.items():
        if (
            isinstance(value, str)
            and _TOKEN.fullmatch(key) is not None
            and key.lower() not in RESERVED
            and not CONTROLS.search(value)
        ):
            expected[key.lower()] = value.strip(" \t").encode()
    for key, value in expected.items():
        assert received.get(key) == value, (key, value)
    assert set(received) <= SERVER_HEADERS | {k.lower() for k in headers}, received
    gateway.assert_rest_serving()
