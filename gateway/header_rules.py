"""Which headers and gRPC metadata come in, go back and travel on: the rules of both doors and
of the hops, in one place.

- In: a request id the client sends (header, metadata or a gRPC message's ``id``) is used only
  when it is printable ASCII of reasonable length.
- Back: a model's response headers go out unless the server owns them or the connection does;
  HTTP/1.1 passes connection-level names the model sets, HTTP/2 (gRPC) forbids them.
- On: only ``x-request-id``, trace context and what the operator allows travel to an upstream;
  hop-by-hop and framing headers never do (each hop frames its own body).
"""

from __future__ import annotations

import re

__all__ = [
    "ALWAYS_FORWARDED",
    "HOP_BY_HOP",
    "REQUEST_ID",
    "SERVER_TIMING",
    "TRACE_HEADERS",
    "grpc_response_metadata",
    "http_response_header",
    "usable_request_id",
    "valid_grpc_metadata",
    "valid_http_header",
    "valid_http_value",
]

REQUEST_ID = "x-request-id"
SERVER_TIMING = "server-timing"
# W3C Trace Context level 2: the trace and span the server recorded the request under.
TRACERESPONSE = "traceresponse"

# Connection-level (RFC 9110, 7.6.1) and framing headers: each hop has its own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "inference-header-content-length",
    }
)
# Headers that say which trace and span a request belongs to, in the formats we know: W3C
# trace context, B3 (single and multiple headers) and Jaeger.
TRACE_HEADERS = frozenset(
    {
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "uber-trace-id",
    }
)
# What travels to every upstream, whatever the operator allows besides: with tracing on, the
# tracing wrapper replaces the trace headers per attempt by the configured formats.
ALWAYS_FORWARDED = frozenset({REQUEST_ID, "baggage"}) | TRACE_HEADERS

# Never taken from a model's response headers. On REST: the body's framing, the connection's,
# and the server's own headers.
_HTTP_RESERVED = frozenset(
    {"content-type", "content-length", "transfer-encoding", "connection", "keep-alive",
     "inference-header-content-length", REQUEST_ID, SERVER_TIMING, TRACERESPONSE}
)  # fmt: skip
# On gRPC: HTTP/2 forbids connection-specific headers (gRPC would pass some on), gRPC sets the
# others itself, and x-request-id is ours.
_GRPC_RESERVED = frozenset(
    {"content-type", "content-length", "te", "connection", "keep-alive", "transfer-encoding",
     "upgrade", "host", "user-agent", "proxy-connection", REQUEST_ID}
)  # fmt: skip

# An HTTP field name (RFC 9110 5.1), and what a field value may not hold: control characters
# other than HTAB (CR and LF among them).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What gRPC carries as ASCII metadata: lowercase token keys, printable ASCII values.
_GRPC_KEY = re.compile(r"[0-9a-z_.\-]+")
_GRPC_VALUE = re.compile(r"[\x20-\x7e]*")
# A message's `id` becomes the x-request-id (metadata here, a header upstream) only if it is
# one: any text may come in the message, and metadata gRPC refuses would fail the call.
_MAX_REQUEST_ID = 256


def valid_http_header(key: object, value: object) -> bool:
    """Whether strict HTTP clients take this header (aiohttp itself would refuse CR, LF and
    NUL only while writing the response, too late for an answer)."""
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and _TOKEN.fullmatch(key) is not None
        and _CONTROL.search(value) is None
    )


def valid_http_value(value: str) -> bool:
    """Whether strict HTTP clients take `value` as a header's value."""
    return _CONTROL.search(value) is None


def http_response_header(key: object, value: object) -> bool:
    """Whether a model's response header goes out on REST."""
    return valid_http_header(key, value) and str(key).lower() not in _HTTP_RESERVED


def valid_grpc_metadata(key: str, value: object) -> bool:
    """Whether gRPC carries this as ASCII metadata (`key` lowercase; -bin keys are binary)."""
    return (
        not key.endswith("-bin")
        and _GRPC_KEY.fullmatch(key) is not None
        and isinstance(value, str)
        and _GRPC_VALUE.fullmatch(value) is not None
    )


def grpc_response_metadata(key: str, value: object) -> bool:
    """Whether a model's response header (`key` lowercase) goes out as gRPC metadata."""
    return (
        key not in _GRPC_RESERVED
        and not key.startswith("grpc-")
        and valid_grpc_metadata(key, value)
    )


def usable_request_id(request_id: str) -> bool:
    """Whether a client's request id can be ours (and travel as a header or metadata)."""
    return 0 < len(request_id) <= _MAX_REQUEST_ID and _GRPC_VALUE.fullmatch(request_id) is not None
