"""gRPC metadata in and out: the client's metadata as headers and its deadline, and what the
server sends back (a model's response headers, the envelope's answer headers), by the rules
of `gateway.header_rules`."""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import TypeAlias
from urllib.parse import unquote

import grpc

from gateway.header_rules import grpc_response_metadata, valid_grpc_metadata
from gateway.request_context import RequestContext
from gateway.server.envelope import answer_headers

__all__ = ["deadline", "headers", "peer_address", "response_metadata", "trailers"]

logger = logging.getLogger("gateway.server.grpc")

Context: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"
Headers = dict[str, str]


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
    """What every ModelInfer ends with, answered or failed: the answer headers a REST client
    would get (``x-request-id``, ``server-timing``, ``traceresponse`` when sampled). In the
    trailers even on success: initial metadata of its own would cost the call a second batch
    through the completion queue (about a tenth of its CPU)."""
    answer = answer_headers(ctx)
    # The request id and traceresponse are ASCII metadata already (gRPC's, or ones we made
    # or found usable); an upstream's Server-Timing entries may not be.
    if len(answer) > 1 and not all(valid_grpc_metadata(*entry) for entry in answer[1:]):
        return tuple(entry for entry in answer if valid_grpc_metadata(*entry))
    return answer


def response_metadata(response_headers: Headers) -> tuple[tuple[str, str], ...]:
    """The model's response headers that gRPC can carry as metadata."""
    metadata: list[tuple[str, str]] = []
    for key, value in response_headers.items():
        key = key.lower()
        if grpc_response_metadata(key, value):
            metadata.append((key, value))
        else:
            logger.debug("response header %r is not valid gRPC metadata; dropped", key)
    return tuple(metadata)


@functools.lru_cache(maxsize=1024)  # a connection's calls share their peer
def peer_address(peer: str | None) -> str:
    """The address in gRPC's ``ipv4:1.2.3.4:5678`` / ``ipv6:%5B::1%5D:5678`` (its brackets
    percent-encoded) / ``unix:path``."""
    kind, _, rest = unquote(peer or "").partition(":")
    return rest.rpartition(":")[0].strip("[]") if kind in ("ipv4", "ipv6") else rest
