"""What the REST hop says on the wire and how it reads failures: its session, request and
answer bodies, and aiohttp's errors as ours (`upstream_error`, one table)::

    aiohttp / asyncio                              ours                   safe to retry
    ClientConnectorError (refused, DNS, TLS)       UpstreamUnavailable    yes: nothing sent
    ClientOSError writing the request              UpstreamUnavailable    yes: incomplete
    asyncio.TimeoutError (+ ServerTimeoutError)    UpstreamTimeout        only if asked for
    ServerDisconnectedError, ClientOSError,        UpstreamProtocolError  no: the model may
      ClientPayloadError, ClientResponseError                               have run
    an HTTP/2 (gRPC) server's frames               WrongProtocol          no
    status >= 400                                  UpstreamStatusError    502/503/504 only
    a body that does not decode                    UpstreamProtocolError  no
      (passed through: binary sizes that do not add up)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import ssl
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.connector import Connection
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.codecs import rest as rest_codec
from gateway.errors import (
    GatewayError,
    InvalidInput,
    Overloaded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    WrongProtocol,
)
from gateway.header_rules import valid_http_header
from gateway.hops.common import json_body, retry_after
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import v1_tensors, v1_value
from gateway.sanitize import upstream_text
from gateway.tensor import InferOutput

__all__ = [
    "Answer",
    "CallTimeouts",
    "Urls",
    "body_payload",
    "content_type",
    "error_text",
    "json_length",
    "negotiated_body",
    "new_session",
    "says_ready",
    "segment",
    "successful",
    "upstream_error",
    "v1_body",
    "v1_response",
]

# Below the idle timeout of common servers (uvicorn's is 5 s), so that the pool drops an idle
# connection before the server does: a POST on a connection the server is closing can fail
# like a crash mid-request, which must not be retried.
KEEPALIVE_TIMEOUT = 4.0
# How much of a non-JSON error body becomes the error's message.
ERROR_TEXT_LIMIT = 512

_Types = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Answer:
    """An upstream's answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def content_type(answer: Answer, role: str) -> str:
    """The answer's Content-Type (JSON if it gives none), if it can go back to a client."""
    value = answer.headers.get("Content-Type", "application/json")
    if not valid_http_header("content-type", value):
        # It would go back to the client as it is, and fail there as the answer is sent.
        raise UpstreamProtocolError(
            f"the {role} answered with a Content-Type that is not a valid header value: "
            f"{upstream_text(value, 64)!r}",
            upstream=role,
        )
    return value


def json_length(answer: Answer) -> int | None:
    """Where the JSON part of a v2 binary-extension answer ends (None: all JSON)."""
    return rest_codec.json_length(answer.headers.get(rest_codec.INFERENCE_HEADER), len(answer.body))


def successful(answer: Answer, role: str, path: str) -> Answer:
    """`answer` if it is a success (2xx); else the error it is, with the upstream's words."""
    if answer.status >= 400:
        raise UpstreamStatusError(
            error_text(answer.body) or f"the {role} answered HTTP {answer.status}",
            status=answer.status,
            upstream=role,
            retry_after=retry_after(answer.headers.get("Retry-After")),
        )
    if not 200 <= answer.status < 300:
        raise UpstreamProtocolError(
            f"the {role} answered HTTP {answer.status} to {path}, not an answer", upstream=role
        )
    return answer


def says_ready(protocol: str, body: bytes) -> bool:
    """Whether a readiness answer (2xx) of a `protocol` ("v1" or "v2") server says ready."""
    # MLServer answers a ready model with an empty body; KServe and we with JSON.
    state = orjson.loads(body) if body.strip() else {}
    if protocol == "v1":
        return isinstance(state, dict) and state.get("ready") is True
    return not isinstance(state, dict) or state.get("ready", True) is not False


def segment(name: str) -> str:
    """`name` as one URL path segment."""
    return quote(name, safe="")


def new_session(max_connections: int, ssl_context: ssl.SSLContext | bool) -> aiohttp.ClientSession:
    """A session for one hop's upstream: at most `max_connections` to it, idle ones dropped
    before the server drops them, no timeout of its own (each call has its deadline)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections, ssl=ssl_context, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        # Tensors compress poorly: compressing them costs both ends CPU for little.
        headers={"Accept-Encoding": "identity"},
        # An answer compressed anyway is decoded within the size limit, not by aiohttp
        # (which would inflate it whole: a small body can expand to gigabytes).
        auto_decompress=False,
        response_class=_Response,
    )


# The seam: aiohttp's errors, most specific first (`isinstance` picks the first match).
_ERRORS: tuple[tuple[_Types, type[UpstreamError], str], ...] = (
    # TLS failures are connect errors too: nothing was sent (a retry is useless, not harmful).
    (aiohttp.ClientConnectorError, UpstreamUnavailable, "cannot connect to the {role}"),
    (asyncio.TimeoutError, UpstreamTimeout, "the {role} did not answer within {timeout:.3f} s"),
    (
        (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError),
        UpstreamProtocolError,
        "the {role} closed the connection without answering",
    ),
    (aiohttp.ClientPayloadError, UpstreamProtocolError, "the {role}'s answer broke off"),
    (aiohttp.ClientResponseError, UpstreamProtocolError, "the {role} sent malformed HTTP"),
    ((aiohttp.ClientError, OSError), UpstreamProtocolError, "the call to the {role} failed"),
)  # fmt: skip


# aiohttp's words for a request body it failed to write.
_UNSENT = "Can not write request body"


# How an HTTP/2 server's first frame (its SETTINGS: a 3-byte length, then type 4) reads to an
# HTTP/1.1 parser, in aiohttp's error.
_HTTP2_FRAME = re.compile(r"""b['"]\\x00\\x00(?:\\x[0-9a-f]{2}|\\.|[^\\])\\x04\\x00""")


def upstream_error(
    exc: BaseException, role: str, timeout: float, address: str = ""
) -> GatewayError:
    """Our error for an aiohttp / socket error of a call to `role` (at `address`; raise it
    ``from exc``)."""
    if _out_of_descriptors(exc):
        # This process's condition, not the upstream's: said as such, and not retried.
        return Overloaded(
            f"the gateway is out of file descriptors and cannot open a connection to the "
            f"{role}; try again later",
            retry_after=1,
        )
    if isinstance(exc, aiohttp.ClientResponseError) and _HTTP2_FRAME.search(exc.message or ""):
        at = f" at {address}" if address else ""
        return WrongProtocol(
            f"the {role}{at} answers HTTP/2: it speaks gRPC, not REST "
            f"(set --{role}_protocol to grpc-v2, or auto)",
            speaks="grpc-v2",
            upstream=role,
        )
    if isinstance(exc, aiohttp.ClientOSError) and _UNSENT in str(exc):
        # The request could not be written (a pooled connection the upstream had just
        # closed): an incomplete request cannot have reached its model.
        return UpstreamUnavailable(
            f"cannot send to the {role}: {upstream_text(str(exc))}", upstream=role
        )
    for types, error, template in _ERRORS:
        if isinstance(exc, types):
            reason = template.format(role=role, timeout=timeout)
            # A response error's str() repeats the whole request; its message is the point,
            # and it may quote what the upstream sent.
            detail = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
            detail = upstream_text(detail)
            return error(f"{reason}: {detail}" if detail else reason, upstream=role)
    return UpstreamProtocolError(
        f"the call to the {role} failed: {upstream_text(repr(exc))}", upstream=role
    )


def _out_of_descriptors(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it wraps) says this process has no descriptor left."""
    for _ in range(8):  # bounded: a chain of causes is short
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            return True
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    return False


# Bodies


# aiohttp warns (ResourceWarning) that a body over 1 MiB given as bytes "might lock the event
# loop". Tensor bodies are often that big, and one write of bytes already in memory is the
# cheapest way to send them (the transport buffers what the socket cannot take yet); under
# ``-W error`` the warning would fail every such request.
_LARGE_BODY = 1 << 20


class _Response(aiohttp.ClientResponse):
    """An upstream's answer whose connection is not pooled again after a 500.

    A 500 is what an unexpected error in the upstream becomes, and the server may close the
    connection a moment after it although the answer said nothing of it (uvicorn does, after
    an exception that starlette answered): a request sent on it meanwhile would be reset.
    502-504 are kept: an overloaded or proxied upstream's deliberate answers, where a new
    connection per retry would only add to its load."""

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        await super().start(connection)
        if self.status == 500 and protocol is not None:
            if self.connection is None:  # the whole answer came at once: already pooled
                protocol.close()
            else:
                protocol.force_close()  # closed once read
        return self


def body_payload(body: bytes) -> bytes | aiohttp.BytesPayload:
    if len(body) <= _LARGE_BODY:
        return body
    with warnings.catch_warnings():  # no await inside: no other request runs meanwhile
        warnings.simplefilter("ignore", ResourceWarning)
        return aiohttp.BytesPayload(body)


def negotiated_body(request: InferRequest, binary: bool) -> tuple[bytes, int | None]:
    """The v2 body of `request`: binary if the upstream takes it, else JSON unless JSON
    cannot carry the tensors."""
    if binary:
        return request.rest_body(True)
    try:
        return request.rest_body(False)
    except InvalidInput:
        # NaN, infinity or BYTES that are not UTF-8: JSON cannot carry them, binary can.
        return request.rest_body(True)


def v1_body(request: InferRequest) -> bytes:
    body: dict[str, Any] = {"instances": v1_value(request.inputs, "instances")}
    params = {k: v for k, v in (request.parameters or {}).items() if k not in rest_codec.REST_ONLY}
    if params:
        # v1 has no parameters of its own; the binary extension's framing means nothing there.
        body["parameters"] = params
    return json_body(body)


def v1_response(answer: Any, request: InferRequest) -> InferResponse:
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise InvalidInput("a v1 answer needs 'predictions'")
    outputs = v1_tensors(answer["predictions"], InferOutput, "predictions")
    return InferResponse(request.id or "", request.model_name, outputs)


def error_text(body: bytes) -> str:
    """The upstream's ``{"error": ...}`` message, else the start of its body: one line, cut
    short (`gateway.sanitize`)."""
    parsed = None
    if len(body) <= _LARGE_BODY:  # an error message, not something worth parsing at length
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(body)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return upstream_text(error)
    return upstream_text(body, ERROR_TEXT_LIMIT)


class Urls:
    """URLs of paths on replicas, each parsed once (a hop calls few)."""

    def __init__(self, limit: int = 256) -> None:
        self._parsed: dict[tuple[str, str], URL] = {}
        self._limit = limit

    def __call__(self, base_url: str, path: str) -> URL:
        key = (base_url, path)
        url = self._parsed.get(key)
        if url is None:
            if len(self._parsed) >= self._limit:  # versions or replicas that come and go
                self._parsed.clear()
            url = self._parsed[key] = URL(base_url + path, encoded=True)
        return url


class CallTimeouts:
    """A call's timeout as its header value and as aiohttp's, made again only when it
    changes (it is the same every call without an inbound deadline)."""

    def __init__(self) -> None:
        self._last: tuple[float, str, aiohttp.ClientTimeout] = (-1.0, "", aiohttp.ClientTimeout())

    def __call__(self, seconds: float) -> tuple[str, aiohttp.ClientTimeout]:
        last = self._last
        if last[0] != seconds:
            timeout = aiohttp.ClientTimeout(total=seconds)
            last = self._last = (seconds, f"{seconds:.3f}", timeout)
        return last[1], last[2]
