"""Open Inference Protocol v2 REST: health, metadata, infer / explain (with the binary tensor
extension), and the model repository extension."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import offload
from gateway.codecs.rest import INFERENCE_HEADER, decode_weight, json_length
from gateway.errors import InvalidInput
from gateway.infer_request import InferRequest
from gateway.model import InferenceVerb
from gateway.passthrough import Passthrough
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

__all__ = ["ROUTES"]

PROTOCOL = "v2"


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[DATAPLANE].metadata())


async def live(request: web.Request) -> web.Response:
    is_live = request.app[DATAPLANE].live()
    return json_response({"live": is_live}, 200 if is_live else 503)


async def ready(request: web.Request) -> web.Response:
    is_ready = await request.app[DATAPLANE].ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def models(request: web.Request) -> web.Response:
    return json_response({"models": request.app[DATAPLANE].model_names()})


async def model_metadata(request: web.Request) -> web.Response:
    name, version = _model(request)
    return json_response(await request.app[DATAPLANE].model_metadata(name, version))


async def model_ready(request: web.Request) -> web.Response:
    name, version = _model(request)
    is_ready = await request.app[DATAPLANE].model_ready(name, version)
    return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)


def _inference(verb: InferenceVerb) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        name, version = _model(request)
        body = await read_body(request)
        # Binary whenever the header says so, whatever the Content-Type (clients differ).
        length = json_length(request.headers.get(INFERENCE_HEADER), len(body))
        payload: InferRequest | Passthrough
        if request.app[DATAPLANE].passthrough(name, PROTOCOL, length is not None, verb):
            payload = Passthrough(PROTOCOL, name, body, length, version)
        else:
            limits = request.app[LIMITS]
            payload = await offload.run(
                lambda: InferRequest.from_bytes(body, length, name, limits),
                decode_weight(body, length),
            )
            if version:
                payload.model_version = version
        result = await run_model(request, name, payload, verb, model_headers(request))
        return await encode(result)

    handler.__name__ = verb.name.lower()
    return handler


infer = _inference(InferenceVerb.PREDICT)
explain = _inference(InferenceVerb.EXPLAIN)


async def repository_index(request: web.Request) -> web.Response:
    body = await read_body(request)
    options = loads(body) if body.strip() else {}
    ready_only = options.get("ready", False) if isinstance(options, dict) else None
    if not isinstance(ready_only, bool):
        raise InvalidInput('the repository index takes an optional {"ready": true|false}')
    return json_response(await request.app[DATAPLANE].repository_index(ready_only))


async def load(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[DATAPLANE].load(name)
    return json_response({"name": name, "load": True})


async def unload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[DATAPLANE].unload(name)
    return json_response({"name": name, "unload": True})


def _model(request: web.Request) -> tuple[str, str | None]:
    return request.match_info["name"], request.match_info.get("version")


_MODEL = "/v2/models/{name}"
_VERSION = "/v2/models/{name}/versions/{version}"
_INFER = "InferenceRequest"

ROUTES = (
    Route("GET", "/v2", server_metadata, "Server metadata", PROTOCOL),
    Route("GET", "/v2/health/live", live, "Server liveness", PROTOCOL),
    Route("GET", "/v2/health/ready", ready, "Server readiness (503 when not ready)", PROTOCOL),
    Route("GET", "/v2/models", models, "List the models", PROTOCOL),
    Route("GET", _MODEL, model_metadata, "Model metadata", PROTOCOL),
    Route("GET", _VERSION, model_metadata, "Model metadata (one version)", PROTOCOL),
    Route("GET", f"{_MODEL}/ready", model_ready, "Model readiness (503 when not)", PROTOCOL),
    Route("GET", f"{_VERSION}/ready", model_ready, "Model version readiness", PROTOCOL),
    Route("POST", f"{_MODEL}/infer", infer, "Inference", PROTOCOL, True, _INFER),
    Route("POST", f"{_VERSION}/infer", infer, "Inference (one version)", PROTOCOL, True, _INFER),
    Route("POST", f"{_MODEL}/explain", explain, "Explanation", PROTOCOL, True, _INFER),
    Route("POST", f"{_VERSION}/explain", explain, "Explanation (one version)", PROTOCOL, True,
          _INFER),
    Route("GET", "/v2/repository/index", repository_index, "Repository index", PROTOCOL),
    Route("POST", "/v2/repository/index", repository_index, "Repository index", PROTOCOL,
          body="RepositoryIndexRequest"),
    Route("POST", "/v2/repository/models/{name}/load", load, "Load a model", PROTOCOL),
    Route("POST", "/v2/repository/models/{name}/unload", unload, "Unload a model", PROTOCOL),
)  # fmt: skip
