"""The REST front door: an aiohttp app serving KServe v1 and Open Inference Protocol v2.

Handlers (in `rest_v1` / `rest_v2`) decode, call the `DataPlane`, encode. Everything around
them happens in one middleware, which puts each request in the envelope both doors share
(`gateway.server.envelope`: context, request id, deadline, admission, in-flight gauge,
request metrics, SERVER span) and adds what is HTTP's own: the body size limit, the mapping of
errors to ``{"error": ...}`` responses, ``x-request-id`` and ``Server-Timing`` headers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import HttpVersion11, web
from aiohttp.typedefs import Handler
from opentelemetry.trace import Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, InvalidInput, PayloadTooLarge, http_status
from gateway.header_rules import REQUEST_ID, http_response_header
from gateway.metrics import Metrics
from gateway.request_context import RequestContext
from gateway.server import connections, openapi, rest_graph, rest_v1, rest_v2, traces_view
from gateway.server.cloudevents import EventSettings
from gateway.server.drain import Drain, expired_message
from gateway.server.envelope import Envelope, Inbound, SpanStart, answer_headers, request_id
from gateway.server.rest_common import (
    BODY_TIMEOUT,
    CONTEXT,
    DATAPLANE,
    LIMITS,
    RESPONSE_HEADERS,
    Route,
    json_response,
)
from gateway.settings import ServerSettings

if TYPE_CHECKING:
    from gateway.tracing_recent import RecentSpans

__all__ = ["create_app", "routes"]

logger = logging.getLogger("gateway.server.rest")

# nginx's status for a request whose client left before the answer (metrics count it so).
CLIENT_CLOSED = 499
_CLIENT_CLOSED = str(CLIENT_CLOSED)
SETTINGS = web.AppKey("settings", ServerSettings)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", dict[str, Any])
# Route by handler, for the middleware to tell which requests are inference.
ROUTES = web.AppKey("routes", dict[Handler, Route])
ENVELOPE = web.AppKey("envelope", Envelope)
DRAIN = web.AppKey("drain", Drain)


class _Door:
    """What the middleware reads on every request, in one place (one app lookup, not six)."""

    __slots__ = ("drain", "envelope", "max_request_bytes", "max_write_buffer", "root_model",
                 "routes")  # fmt: skip

    def __init__(self, app: web.Application, settings: ServerSettings) -> None:
        self.envelope = app[ENVELOPE]
        self.drain = app[DRAIN]
        self.routes = app[ROUTES]
        self.max_request_bytes = settings.max_request_bytes
        self.max_write_buffer = settings.max_write_buffer
        self.root_model = settings.root_model or ""


DOOR = web.AppKey("door", _Door)


def create_app(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    *,
    tracer: Tracer | None = None,
    recent_spans: RecentSpans | None = None,
    service_name: str | None = None,
    drain: Drain | None = None,
) -> web.Application:
    """The REST app for `dataplane` (not yet listening); `tracer` None: no spans;
    `recent_spans`: the buffer ``/traces`` shows (None: the page says how to turn it on);
    `service_name`: what its Server-Timing headers call it; `drain`: where the server's stop
    finds the requests in flight."""
    table = routes(
        settings.enable_docs_url,
        traces=recent_spans is not None,
        graph=settings.root_model is not None,
    )
    # aiohttp refuses a longer body as it reads it (a chunked one has no Content-Length).
    app = web.Application(client_max_size=settings.max_request_bytes, middlewares=[_serve])
    app[DATAPLANE] = dataplane
    app[SETTINGS] = settings
    app[BODY_TIMEOUT] = settings.request_body_timeout
    app[LIMITS] = settings.decode_limits
    app[METRICS] = metrics
    app[ENVELOPE] = Envelope(dataplane, metrics, tracer, service_name)
    app[DRAIN] = drain or Drain(settings.grace_period)
    app[ROUTES] = {route.handler: route for route in table}
    app[OPENAPI] = openapi.document(table, dataplane.server_name, dataplane.server_version)
    app[rest_v1.EVENT_SETTINGS] = EventSettings.from_env(os.environ)
    if recent_spans is not None:
        app[traces_view.RECENT_SPANS] = recent_spans
    if settings.root_model is not None:
        app[rest_graph.ROOT_MODEL] = settings.root_model
    app[DOOR] = _Door(app, settings)
    # aiohttp tries the routes under a path prefix in the order they were added: inference
    # first saves the busiest requests four pattern matches (no two routes match one request
    # with one method, so the order decides nothing else).
    for route in sorted(table, key=lambda route: not route.inference):
        app.router.add_route(route.method, route.path, route.handler, expect_handler=_expect)
    return app


def routes(docs: bool = False, traces: bool = False, graph: bool = False) -> list[Route]:
    """Every route the app serves; the docs routes only when `docs`, the trace view only
    when `traces` (else its routes say how to turn it on), ``POST /`` only when serving a
    `graph`."""
    return [
        *_SERVER_ROUTES,
        *(rest_graph.ROUTES if graph else ()),
        *rest_v1.ROUTES,
        *rest_v2.ROUTES,
        *(_DOCS_ROUTES if docs else ()),
        *(traces_view.ROUTES if traces else traces_view.OFF_ROUTES),
    ]


# How long the client (or the proxy in front, Envoy) will wait: it bounds every hop.
REQUEST_TIMEOUT = "x-request-timeout"
ENVOY_TIMEOUT_MS = "x-envoy-expected-rq-timeout-ms"


def inbound_deadline(headers: Mapping[str, str]) -> float | None:
    """time.monotonic() by which the client needs its answer, from its timeout headers."""
    seconds: list[float] = []
    for name, scale in ((REQUEST_TIMEOUT, 1.0), (ENVOY_TIMEOUT_MS, 0.001)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            parsed = float(value) * scale
        except ValueError:
            parsed = math.nan
        if not math.isfinite(parsed) or parsed <= 0:
            raise InvalidInput(f"{name} must be a positive number, got {value!r}")
        seconds.append(parsed)
    return time.monotonic() + min(seconds) if seconds else None


async def _expect(request: web.Request) -> None:
    """``Expect: 100-continue``: invite only a body that will be read; one over the limit
    gets its 413 (from the middleware) before it is sent. Other expectations are ignored, as
    RFC 9110 allows, rather than answered with aiohttp's plain-text 417."""
    expect = request.headers.get("Expect", "").lower()
    if expect != "100-continue" or request.version != HttpVersion11:
        return
    length = request.content_length
    if length is not None and length > request.app[SETTINGS].max_request_bytes:
        return
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own handler: the response has not begun


@web.middleware
async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    door = request.app[DOOR]
    route = door.routes.get(request.match_info.handler)
    headers = request.headers
    client_id = request_id(headers)
    try:
        deadline = inbound_deadline(headers)
    except InvalidInput as exc:
        refusal = _gateway_error(request, exc)
        refusal.headers[REQUEST_ID] = client_id
        return refusal
    envelope = door.envelope
    context = envelope.context(route.protocol if route is not None else "", client_id, deadline)
    request[CONTEXT] = context
    model_headers: dict[str, str] = {}
    request[RESPONSE_HEADERS] = model_headers
    drain = door.drain
    with drain.tracked():
        if route is not None and route.inference:
            response = await _inference(door, route, request, handler)
        else:  # health probes, metadata and /metrics are not traced: probes would flood traces
            response = await _respond(request, handler, door.max_request_bytes)
    if drain.stopping:
        response.force_close()  # no further request on it: the server is stopping
    _add_headers(response, model_headers, context)
    connections.paced(response, door.max_write_buffer)
    if _body_abandoned(request, response, drain):
        await _send_and_close(request, response)
    return response


def _body_abandoned(request: web.Request, response: web.StreamResponse, drain: Drain) -> bool:
    """Whether the answer gives up on a body still arriving: too slow, or undecodable."""
    body = request.content
    return (
        request.transport is not None  # else the client is gone: nothing to send or close
        and not body.is_eof()
        and (response.status == 408 or body.exception() is not None or drain.expired)
    )


async def _send_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send `response` now, then close the connection.

    Left to itself, aiohttp would keep the connection after the answer to read and discard
    the rest of the body for up to 10 s ("lingering"): for a body that trickles in too slowly,
    that is the hold on a connection its sender wants, and a body that cannot be decoded
    would only fail again (logged as an unhandled error). aiohttp then finds the response sent.
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()


async def _inference(
    door: _Door, route: Route, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """`_respond` inside the request's envelope: counted, measured, admitted and (given a
    tracer) in a SERVER span that continues the trace the client sent."""
    envelope = door.envelope
    model = request.match_info.get("name") or door.root_model
    span = _span_start(route, request, model) if envelope.tracer is not None else None
    # CLIENT_CLOSED is kept if the client goes away before the answer is ready.
    with envelope.inbound(request[CONTEXT], span, _CLIENT_CLOSED) as inbound:
        inbound.model = model
        response = await _respond(request, handler, door.max_request_bytes, inbound)
        inbound.status = str(response.status)
        if inbound.span is not None:
            inbound.span_attributes["http.response.status_code"] = response.status
            if response.status >= 500:  # a 4xx is the client's error, not this server's
                inbound.span.set_status(Status(StatusCode.ERROR))
        return response


def _span_start(route: Route, request: web.Request, model: str) -> SpanStart:
    # The matched route's template: `route` is found by handler, which routes with and
    # without a version share.
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else route.path
    attributes: dict[str, AttributeValue] = {
        "http.request.method": request.method,
        "http.route": template,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "gateway.model_name": model,
        "gateway.request_id": request[CONTEXT].request_id,
    }
    if request.remote:
        attributes["client.address"] = request.remote
    return SpanStart(f"{request.method} {template}", request.headers, attributes)


async def _respond(
    request: web.Request, handler: Handler, limit: int, inbound: Inbound | None = None
) -> web.StreamResponse:
    """The handler's response, or the error response for what it raised; with `inbound`,
    the handler runs admitted (`Inbound.admitted`). `limit`: the largest body taken."""
    try:
        _check_length(request, limit)
        if inbound is None:
            return await handler(request)
        with inbound.admitted():
            return await handler(request)
    except web.HTTPException as exc:  # routing, or aiohttp's own body size limit
        return _http_error(request, exc)
    except GatewayError as exc:
        return _gateway_error(request, exc)
    except ConnectionError as exc:
        if request.transport is not None:
            return _unexpected(request, exc)
        # The client went away (mid-body, say): not this server's failure, and no one to
        # answer. Logged quietly: a client can do this as often as it likes.
        logger.debug("%s %s: the client closed the connection", request.method, _log_path(request))
        return _error(CLIENT_CLOSED, "the client closed the connection")
    except Exception as exc:
        return _unexpected(request, exc)
    except asyncio.CancelledError:
        drain = request.app[DRAIN]
        if not drain.cut_off():
            raise
        return _error(503, expired_message(drain.grace))


def _unexpected(request: web.Request, exc: Exception) -> web.Response:
    # A bug or an unexpected library error: its text may hold internals, so the client
    # gets a short message and the log gets the traceback.
    logger.exception("%s %s failed", request.method, _log_path(request))
    return _error(500, f"internal error: {type(exc).__name__}")


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body has {length} bytes; the limit is {limit}")


def _gateway_error(request: web.Request, exc: GatewayError) -> web.Response:
    status = http_status(exc)
    log = logger.warning if status >= 500 else logger.debug
    log("%s %s: %s %s", request.method, _log_path(request), status, exc)
    response = _error(status, str(exc))
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
    return response


def _log_path(request: web.Request) -> str:
    # As sent (percent-encoded): the decoded path may hold line breaks that forge log lines.
    return request.rel_url.raw_path


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif isinstance(exc, web.HTTPNotFound):
        message = f"no route for {request.method} {request.path}"
    else:
        message = exc.text or exc.reason
    response = _error(exc.status, message)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def _error(status: int, message: str) -> web.Response:
    response = json_response({"error": message}, status)
    if status == 413:
        # The body may be partly unread: do not reuse the connection for another request.
        response.force_close()
    return response


def _add_headers(
    response: web.StreamResponse, model_headers: dict[str, str], context: RequestContext
) -> None:
    for key, value in model_headers.items():
        if http_response_header(key, value):
            response.headers[key] = value
        else:
            logger.debug("response header %r is reserved or not valid HTTP; dropped", key)
    for key, value in answer_headers(context):
        response.headers[key] = value


async def _alive(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def _metrics(request: web.Request) -> web.Response:
    # With several workers this reads their files: keep it off the event loop.
    accept = request.headers.get("Accept", "")  # OpenMetrics, with exemplars, when asked
    body, content_type = await asyncio.to_thread(request.app[METRICS].exposition, accept)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def _docs(request: web.Request) -> web.Response:
    return web.Response(text=openapi.page(request.app[OPENAPI]), content_type="text/html")


_SERVER_ROUTES = (
    Route("GET", "/", _alive, "Liveness (KServe v1)"),
    Route("GET", "/metrics", _metrics, "Prometheus metrics"),
)
_DOCS_ROUTES = (
    Route("GET", "/openapi.json", _openapi, "This OpenAPI document"),
    Route("GET", "/docs", _docs, "The endpoints, as an HTML page"),
)
