"""What the REST handlers share: app and request keys, the route entry, running and encoding."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from gateway import offload
from gateway.codecs import json_depth
from gateway.codecs.limits import DecodeLimits
from gateway.codecs.rest import BINARY_CONTENT_TYPE, INFERENCE_HEADER
from gateway.dataplane import DataPlane
from gateway.errors import InferenceError, InvalidInput, RequestTimeout
from gateway.infer_response import InferResponse
from gateway.messages import encoding_weight
from gateway.model import InferenceVerb
from gateway.passthrough import PassthroughResponse
from gateway.request_context import RequestContext

__all__ = [
    "BODY_TIMEOUT",
    "CONTEXT",
    "DATAPLANE",
    "JSON",
    "LIMITS",
    "RESPONSE_HEADERS",
    "Route",
    "encode",
    "encode_result",
    "json_response",
    "loads",
    "model_headers",
    "read_body",
    "run_model",
]

JSON = "application/json"
_DUMPS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

DATAPLANE = web.AppKey("dataplane", DataPlane)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
LIMITS = web.AppKey("limits", DecodeLimits)
CONTEXT = web.RequestKey("context", RequestContext)
# Headers the model set for the response (models created with return_response_headers=True).
RESPONSE_HEADERS = web.RequestKey[dict[str, str]]("response_headers")


@dataclass(frozen=True)
class Route:
    """One endpoint: what aiohttp routes, and what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    # "v1" / "v2" for protocol routes: the RequestContext's protocol and the document's tag.
    protocol: str = ""
    # Inference routes are counted in the request metrics and in-flight gauge.
    inference: bool = False
    # The request body's schema in the document (a key of openapi.SCHEMAS), if it takes one.
    body: str | None = None


def json_response(obj: Any, status: int = 200) -> web.Response:
    try:
        body = orjson.dumps(obj, option=_DUMPS)
    except orjson.JSONEncodeError as exc:
        raise InferenceError(f"the response cannot be encoded as JSON: {exc}") from None
    return web.Response(body=body, status=status, content_type=JSON)


def loads(body: bytes) -> Any:
    """Parse a JSON body; a malformed one is the client's error."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    json_depth.check(body)
    return document


async def read_body(request: web.Request) -> bytes:
    """The request body, or a 408 when the client takes too long to send it (a slow body
    would otherwise hold a connection and a handler indefinitely)."""
    timeout = request.app[BODY_TIMEOUT]
    try:
        if request.content.is_eof():  # all here (small bodies come with the headers)
            return await request.read()
        return await asyncio.wait_for(request.read(), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except web.RequestPayloadError as exc:
        # A body that is not what its Content-Encoding or chunked framing says.
        cause = exc.__cause__
        reason = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        reason = (reason.strip().splitlines() or ["malformed"])[0].rstrip(":")
        raise InvalidInput(f"the request body cannot be read: {reason}") from None


def model_headers(request: web.Request) -> dict[str, str]:
    """The request's headers as models see them: a plain dict, keys in lower case."""
    return {key.lower(): value for key, value in request.headers.items()}


async def run_model(
    request: web.Request, name: str, payload: Any, verb: InferenceVerb, headers: dict[str, str]
) -> Any:
    """Run model `name` on `payload` (inside the request's envelope, which made its context
    current)."""
    return await request.app[DATAPLANE].infer(
        name, payload, headers, request[RESPONSE_HEADERS], verb
    )


async def encode(result: Any) -> web.Response:
    """`encode_result`, in a thread when the answer is large (`gateway.offload`)."""
    if isinstance(result, InferResponse):
        return await offload.run(lambda: encode_result(result), encoding_weight(result.outputs))
    return encode_result(result)


def encode_result(result: Any) -> web.Response:
    """A model's answer as a response: v2 (binary extension when asked), bytes, text or JSON."""
    if isinstance(result, PassthroughResponse):
        # The upstream's answer to the very body the client sent: already in its form, and
        # in its Content-Type as sent (aiohttp's content_type= refuses "; charset=utf-8").
        headers = {"Content-Type": result.content_type}
        if result.json_length is not None:
            headers[INFERENCE_HEADER] = str(result.json_length)
        return web.Response(body=result.body, headers=headers)
    if isinstance(result, InferResponse):
        body, json_length = result.rest_body()
        if json_length is None:
            return web.Response(body=body, content_type=JSON)
        return web.Response(
            body=body,
            content_type=BINARY_CONTENT_TYPE,
            headers={INFERENCE_HEADER: str(json_length)},
        )
    if isinstance(result, bytes | bytearray | memoryview):
        return web.Response(body=result, content_type=BINARY_CONTENT_TYPE)
    if isinstance(result, str):
        return web.Response(text=result, content_type="text/plain")
    return json_response(result)
