"""The gateway's exceptions and what each one means on the wire.

Every error the gateway raises or passes on is a `GatewayError`. `STATUS` is the one table
that gives each class its HTTP status and gRPC code; the REST and gRPC servers both read it
through `http_status` / `grpc_code`, so they cannot disagree::

    GatewayError ................................ 500  INTERNAL
    ├── InferenceError .......................... 500  INTERNAL
    ├── InvalidInput (also a ValueError) ........ 400  INVALID_ARGUMENT
    │   ├── PayloadTooLarge ..................... 413  RESOURCE_EXHAUSTED
    │   └── RequestTimeout ...................... 408  DEADLINE_EXCEEDED   (body too slow)
    ├── UnsupportedProtocol ..................... 501  UNIMPLEMENTED
    ├── Unimplemented (also NotImplementedError)  501  UNIMPLEMENTED       (no predictor)
    ├── ModelNotFound ........................... 404  NOT_FOUND
    ├── ModelNotReady ........................... 503  UNAVAILABLE
    ├── ServerNotReady .......................... 503  UNAVAILABLE
    ├── ServerNotLive ........................... 503  UNAVAILABLE
    ├── Overloaded .............................. 503  RESOURCE_EXHAUSTED
    └── UpstreamError ........................... 502  UNAVAILABLE
        ├── UpstreamUnavailable ................. 503  UNAVAILABLE         (connect failed)
        ├── UpstreamTimeout ..................... 504  DEADLINE_EXCEEDED
        ├── UpstreamProtocolError ............... 502  INTERNAL            (unreadable answer)
        │   └── WrongProtocol ................... 502  INTERNAL            (HTTP/2 for HTTP/1)
        └── UpstreamStatusError ................. the upstream's own status, and its gRPC
                                                  code (or the one `GRPC_FOR_HTTP` gives)

`UpstreamStatusError` carries the status an upstream answered with, so a predictor's 503
reaches the client as a 503 (with its message and ``Retry-After``), not as a 500.
`GRPC_FOR_HTTP` / `HTTP_FOR_GRPC` translate statuses that come from upstreams.
"""

from __future__ import annotations

import grpc

__all__ = [
    "GRPC_FOR_HTTP",
    "HTTP_FOR_GRPC",
    "STATUS",
    "GatewayError",
    "InferenceError",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServerNotLive",
    "ServerNotReady",
    "Unimplemented",
    "UnsupportedProtocol",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WrongProtocol",
    "grpc_code",
    "http_status",
]

Code = grpc.StatusCode


class GatewayError(Exception):
    """Base of every error the gateway turns into an error response."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Seconds a client should wait before trying again; sent as Retry-After.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.reason


class InferenceError(GatewayError):
    """The model failed while running (KServe's name)."""

    def __init__(
        self, reason: str, status: str | None = None, debug_details: str | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.debug_details = debug_details


class InvalidInput(GatewayError, ValueError):
    """The request is malformed or does not fit the model."""


class PayloadTooLarge(InvalidInput):
    """The request body, or a tensor in it, is larger than the configured limit."""


class RequestTimeout(InvalidInput):
    """The client did not send its request body within the time allowed."""


class UnsupportedProtocol(GatewayError):
    """The request's protocol cannot be served, or cannot be bridged to the upstream's."""

    def __init__(self, protocol_version: str, reason: str | None = None) -> None:
        super().__init__(reason or f"unsupported protocol {protocol_version}")
        self.protocol_version = protocol_version


class Unimplemented(GatewayError, NotImplementedError):
    """The model cannot do what was asked: it has no predictor (or explainer) to forward to
    and no handler of its own. KServe answers 501 here too."""


class ModelNotFound(GatewayError):
    def __init__(self, model_name: str) -> None:
        super().__init__(f"model {model_name!r} does not exist")
        self.model_name = model_name


class ModelNotReady(GatewayError):
    def __init__(self, model_name: str, detail: str | None = None) -> None:
        reason = f"model {model_name!r} is not ready"
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.model_name = model_name


class ServerNotReady(GatewayError):
    def __init__(self, reason: str = "server is not ready") -> None:
        super().__init__(reason)


class ServerNotLive(GatewayError):
    def __init__(self, reason: str = "server is not live") -> None:
        super().__init__(reason)


class Overloaded(GatewayError):
    """Too many requests in flight; refused at once instead of queued."""


class UpstreamError(GatewayError):
    """A hop to a predictor or explainer failed."""

    def __init__(self, reason: str, *, upstream: str = "", retry_after: float | None = None):
        super().__init__(reason, retry_after=retry_after)
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached: nothing was delivered, so a retry is safe."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the request's deadline."""


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not a valid response."""


class WrongProtocol(UpstreamProtocolError):
    """The upstream speaks another protocol than the hop: HTTP/2 (gRPC) where REST was
    expected, or HTTP/1.x where gRPC was. `speaks` is what it seems to speak ("grpc-v2" or
    "rest")."""

    def __init__(self, reason: str, *, speaks: str, upstream: str = "") -> None:
        super().__init__(reason, upstream=upstream)
        self.speaks = speaks


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; the client gets that same status."""

    def __init__(
        self,
        reason: str,
        *,
        status: int,
        code: grpc.StatusCode | None = None,
        upstream: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, upstream=upstream, retry_after=retry_after)
        self.status = status
        self.code = code if code is not None else GRPC_FOR_HTTP.get(status, _default_code(status))


STATUS: dict[type[GatewayError], tuple[int, grpc.StatusCode]] = {
    GatewayError: (500, Code.INTERNAL),
    InferenceError: (500, Code.INTERNAL),
    InvalidInput: (400, Code.INVALID_ARGUMENT),
    PayloadTooLarge: (413, Code.RESOURCE_EXHAUSTED),
    RequestTimeout: (408, Code.DEADLINE_EXCEEDED),
    UnsupportedProtocol: (501, Code.UNIMPLEMENTED),
    Unimplemented: (501, Code.UNIMPLEMENTED),
    ModelNotFound: (404, Code.NOT_FOUND),
    ModelNotReady: (503, Code.UNAVAILABLE),
    ServerNotReady: (503, Code.UNAVAILABLE),
    ServerNotLive: (503, Code.UNAVAILABLE),
    Overloaded: (503, Code.RESOURCE_EXHAUSTED),
    UpstreamError: (502, Code.UNAVAILABLE),
    UpstreamUnavailable: (503, Code.UNAVAILABLE),
    UpstreamTimeout: (504, Code.DEADLINE_EXCEEDED),
    UpstreamProtocolError: (502, Code.INTERNAL),
    WrongProtocol: (502, Code.INTERNAL),
}

# Statuses that arrive from upstreams, translated for a client of the other protocol.
HTTP_FOR_GRPC: dict[grpc.StatusCode, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

GRPC_FOR_HTTP: dict[int, grpc.StatusCode] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def _default_code(status: int) -> grpc.StatusCode:
    return Code.FAILED_PRECONDITION if 400 <= status < 500 else Code.UNKNOWN


def _entry(exc: GatewayError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[GatewayError]


def http_status(exc: GatewayError) -> int:
    """The HTTP status a client receives for `exc`."""
    if isinstance(exc, UpstreamStatusError):
        return exc.status
    return _entry(exc)[0]


def grpc_code(exc: GatewayError) -> grpc.StatusCode:
    """The gRPC status code a client receives for `exc`."""
    if isinstance(exc, UpstreamStatusError):
        return exc.code
    return _entry(exc)[1]
