"""How the gRPC hop reads failures and sends headers: grpc's errors as ours
(`upstream_error`, one table) and headers as metadata::

    status                                 ours                                safe to retry
    UNAVAILABLE, an HTTP/1.x server        WrongProtocol (502)                 no
    UNAVAILABLE, never connected           UpstreamUnavailable                 yes: not sent
    UNAVAILABLE (connection lost, or the   UpstreamStatusError(503)            yes (UNAVAILABLE
      upstream's own answer)                                                    is gRPC's "retry")
    DEADLINE_EXCEEDED                      UpstreamTimeout                     only if asked for
    any other code                         UpstreamStatusError(HTTP_FOR_GRPC)  no
    a message that does not decode         UpstreamProtocolError               no
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from gateway.errors import (
    HTTP_FOR_GRPC,
    InvalidInput,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    WrongProtocol,
)
from gateway.header_rules import valid_grpc_metadata
from gateway.hops.base import Headers
from gateway.hops.common import retry_after
from gateway.sanitize import upstream_text

__all__ = ["grpc_metadata", "metadata_values", "upstream_error"]

Code = grpc.StatusCode

# How gRPC words the failure of a channel that met an HTTP/1.x server.
_HTTP1 = "trying to connect an http1.x server"

# How gRPC words the failure of a call that no connection could carry (so it was not sent).
_NOT_CONNECTED = (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "errors resolving",
    "name resolution",
    "empty address list",
)


def upstream_error(
    exc: grpc.aio.AioRpcError, role: str, timeout: float, address: str = ""
) -> UpstreamError:
    """Our error for a failed call to `role` (at `address`; raise it ``from exc``)."""
    code = exc.code()
    raw = exc.details() or ""
    details = upstream_text(raw) or code.name
    if code == Code.UNAVAILABLE and _HTTP1 in raw.lower():
        at = f" at {address}" if address else ""
        return WrongProtocol(
            f"the {role}{at} answers HTTP/1.x: it speaks REST, not gRPC "
            f"(set --{role}_protocol to v2 or v1, or auto)",
            speaks="rest",
            upstream=role,
        )
    if code == Code.DEADLINE_EXCEEDED:
        return UpstreamTimeout(
            f"the {role} did not answer within {timeout:.3f} s: {details}", upstream=role
        )
    if code == Code.UNAVAILABLE and any(m in details.lower() for m in _NOT_CONNECTED):
        return UpstreamUnavailable(f"cannot connect to the {role}: {details}", upstream=role)
    return UpstreamStatusError(
        details,
        status=HTTP_FOR_GRPC.get(code, 500),
        code=code,
        upstream=role,
        retry_after=retry_after(
            next(iter(metadata_values([exc.trailing_metadata()], "retry-after")), None)
        ),
    )


def grpc_metadata(headers: Headers) -> tuple[tuple[str, str], ...]:
    """`headers` as gRPC metadata. gRPC refuses what it cannot carry (text that is not
    printable ASCII, say, which HTTP allows) by failing the call: refused here instead."""
    metadata = []
    for key, value in headers.items():
        key = key.lower()
        if not valid_grpc_metadata(key, value):
            raise InvalidInput(f"header {key!r} cannot be passed on as gRPC metadata")
        metadata.append((key, value))
    return tuple(metadata)


def metadata_values(metadata: Iterable[Any], key: str) -> list[str]:
    """The text values of `key` in some metadata collections (None ones are skipped)."""
    return [
        value
        for collection in metadata
        for name, value in (collection or ())
        if name == key and isinstance(value, str)
    ]
