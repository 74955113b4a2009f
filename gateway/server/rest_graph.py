"""``POST /``: an inference graph where KServe's router serves it.

The body is any JSON object; the answer is the root node's JSON, and a failure answers as
KServe's router does: the failing step's own JSON body (or ``{"error": "Failed to process
request", "cause": ...}`` for a failure of the graph's own) with the status the failure has.
The graph is also served under the Open Inference Protocol paths as the model it is named.
"""

from __future__ import annotations

import math

from aiohttp import web

from gateway.errors import GatewayError, http_status
from gateway.model import InferenceVerb
from gateway.server.rest_common import (
    Route,
    encode_result,
    json_response,
    loads,
    model_headers,
    read_body,
    run_model,
)

__all__ = ["ROOT_MODEL", "ROUTES"]

PROTOCOL = "v1"
# The name of the model that answers POST / (the graph's).
ROOT_MODEL = web.AppKey("root_model", str)


async def root(request: web.Request) -> web.Response:
    # Here, not at the top: a server with no graph never loads the engine (it has, by now).
    from gateway.graph import error_body

    name = request.app[ROOT_MODEL]
    try:
        payload = loads(await read_body(request))
        result = await run_model(
            request, name, payload, InferenceVerb.PREDICT, model_headers(request)
        )
    except GatewayError as exc:
        response = json_response(error_body(exc), http_status(exc))
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    return encode_result(result)


ROUTES = (Route("POST", "/", root, "The inference graph, as KServe's router", PROTOCOL, True),)
