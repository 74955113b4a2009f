"""gRPC metadata in and out: the client's metadata as headers and its deadline, and what the
server may send back (a model's response headers, x-request-id, server-timing, and
traceresponse when the call was sampled)."""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TypeAlias

import grpc

from gateway import tracing_ids
from gateway.request_context import RequestContext
from gateway.server.server_timing import server_timing

__all__ = ["deadline", "headers", "response_metadata", "trailers", "usable_request_id"]

logger = logging.getLogger("gateway.server.grpc")

Context: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"
Headers = dict[str, str]

# What gRPC lets a server send as ASCII metadata: lowercase token keys, printable values.
_KEY = re.compile(r"[0-9a-z_.\-]+")
_VALUE = re.compile(r"[\x20-\x7e]*")
# A message's `id` becomes the x-request-id (metadata here, a header upstream) only if it is
# one: any text may come in the message, and metadata gRPC refuses would fail the call.
_MAX_REQUEST_ID = 256
# Never taken from a model's response headers: HTTP/2 forbids connection-specific headers
# (gRPC would pass some on), gRPC sets the others itself, and x-request-id is ours.
_RESERVED = frozenset(
    [
        "content-type",
        "content-length",
        "te",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "host",
        "user-agent",
        "proxy-connection",
        "x-request-id",
    ]
)


def headers(context: Context) -> Headers:
    """The client's metadata as headers for the model; binary (-bin) values are left out."""
    headers: Headers = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):  # binary (-bin) metadata arrives as bytes
            headers[key.lower()] = value
    return headers


def deadline(context: Context) -> float | None:
    # gRPC reports no deadline as None (older releases: a huge number).
    remaining: float | None = context.time_remaining()
    if remaining is None or not math.isfinite(remaining) or remaining > 1e9:
        return None
    return time.monotonic() + remaining


def trailers(ctx: RequestContext) -> tuple[tuple[str, str], ...]:
    """What every ModelInfer ends with, answered or failed: ``x-request-id`` and the
    ``server-timing`` a REST client would get. In the trailers even on success: initial
    metadata of its own would cost the call a second batch through the completion queue
    (about a tenth of its CPU)."""
    timing = server_timing(ctx)
    if timing is None or not _VALUE.fullmatch(timing):
        found: tuple[tuple[str, str], ...] = (("x-request-id", ctx.request_id),)
    else:
        found = (("x-request-id", ctx.request_id), ("server-timing", timing))
    # Called inside the call's SERVER span, which is current.
    return found if ctx.tracer is None else found + tracing_ids.trailers()


def usable_request_id(request_id: str) -> bool:
    return 0 < len(request_id) <= _MAX_REQUEST_ID and _VALUE.fullmatch(request_id) is not None


def response_metadata(response_headers: Headers) -> tuple[tuple[str, str], ...]:
    """The model's response headers that gRPC can carry as metadata."""
    metadata: list[tuple[str, str]] = []
    for key, value in response_headers.items():
        key = key.lower()
        if (
            key not in _RESERVED
            and not key.startswith("grpc-")
            and not key.endswith("-bin")
            and _KEY.fullmatch(key)
            and isinstance(value, str)
            and _VALUE.fullmatch(value)
        ):
            metadata.append((key, value))
        else:
            logger.debug("response header %r is not valid gRPC metadata; dropped", key)
    return tuple(metadata)
