"""KServe v1 REST: model list and readiness, ``:predict`` and ``:explain``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway import offload
from gateway.codecs.limits import DecodeLimits
from gateway.model import InferenceVerb
from gateway.passthrough import Passthrough
from gateway.server import cloudevents
from gateway.server.cloudevents import EventSettings, Incoming
from gateway.server.rest_common import (
    DATAPLANE,
    LIMITS,
    Route,
    encode,
    json_response,
    loads,
    model_headers,
    read_body,
    run_model,
)

__all__ = ["EVENT_SETTINGS", "ROUTES"]

PROTOCOL = "v1"
EVENT_SETTINGS = web.AppKey("event_settings", EventSettings)

# Bodies of these types are parsed as JSON; any other declared type reaches the model as
# bytes (KServe's list, which includes octet-stream).
_JSON_TYPES = frozenset(
    {"application/json", "application/ld+json", "application/octet-stream", cloudevents.STRUCTURED}
)


async def models(request: web.Request) -> web.Response:
    return json_response({"models": request.app[DATAPLANE].model_names()})


async def model_ready(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ready = await request.app[DATAPLANE].model_ready(name)
    return json_response({"name": name, "ready": ready}, 200 if ready else 503)


def _inference(verb: InferenceVerb) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        headers = model_headers(request)
        body = await read_body(request)
        if _plain_json(headers) and request.app[DATAPLANE].passthrough(name, PROTOCOL, False, verb):
            result = await run_model(
                request, name, Passthrough(PROTOCOL, name, body), verb, headers
            )
            return await encode(result)
        limits = request.app[LIMITS]
        payload, event = await offload.run(
            lambda: decode(headers, body, limits), offload.weight(len(body))
        )
        result = await run_model(request, name, payload, verb, headers)
        if event is None:
            return await encode(result)
        event_headers, body = cloudevents.encode(result, event, name, request.app[EVENT_SETTINGS])
        return web.Response(body=body, headers=event_headers)

    handler.__name__ = verb.name.lower()
    return handler


predict = _inference(InferenceVerb.PREDICT)
explain = _inference(InferenceVerb.EXPLAIN)


def _plain_json(headers: Mapping[str, str]) -> bool:
    """A JSON body that is not a CloudEvent: the upstream can take it as it is."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") and "ce-specversion" not in headers


def decode(
    headers: Mapping[str, str], body: bytes, limits: DecodeLimits | None = None
) -> tuple[Any, Incoming | None]:
    """A v1 body as the model takes it, and the CloudEvent it came in, if any; JSON within
    `limits`."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    json_type = media_type in ("", "application/json") or media_type.endswith("+json")
    as_bytes = not json_type and media_type not in _JSON_TYPES
    # A binary CloudEvent's data is JSON only by its JSON type; other bodies by KServe's list.
    parsed = json_type if "ce-specversion" in headers else not as_bytes
    if limits is not None and parsed:
        limits.check_json(body)
    event = cloudevents.decode(headers, body)
    if event is not None:
        return event
    if as_bytes:
        return body, None
    return loads(body), None


ROUTES = (
    Route("GET", "/v1/models", models, "List the models", PROTOCOL),
    Route("GET", "/v1/models/{name}", model_ready, "Model readiness (503 when not)", PROTOCOL),
    Route("POST", "/v1/models/{name}:predict", predict, "Predict", PROTOCOL, True, "V1Request"),
    Route("POST", "/v1/models/{name}:explain", explain, "Explain", PROTOCOL, True, "V1Request"),
)
