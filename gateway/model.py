"""The model classes of KServe's API: `BaseKServeModel`, `InferenceModel` and `Model`.

A `Model` runs ``preprocess -> predict (or explain) -> postprocess``. User code may write each
handler sync or async; sync handlers run in the server's thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from gateway import logs, offload, request_context, tracing_ids
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import rest as rest_codec
from gateway.codecs import validate
from gateway.errors import InvalidInput, Unimplemented
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.passthrough import Passthrough
from gateway.predictor_config import PredictorConfig

if TYPE_CHECKING:
    from gateway.hops.base import Hop

logger = logging.getLogger("gateway.model")

# v1: a JSON dict (a CloudEvent's data), or bytes for non-JSON content; v2: an InferRequest.
Body = dict[str, Any] | InferRequest | bytes
InferReturnType = dict[str, Any] | InferResponse | list[str] | Any
Headers = dict[str, str]

# Seconds a predictor's model metadata is served from memory: clients that read it before
# each request (tritonclient code, perf_analyzer) do not double the predictor's load.
METADATA_TTL = 5.0


class InferenceVerb(Enum):
    EXPLAIN = 1
    PREDICT = 2


class BaseKServeModel(ABC):
    """What the model repository and server expect of every model."""

    @abstractmethod
    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = False
        self.engine = False

    async def healthy(self) -> bool:
        """Whether the model can serve; `ready` unless overridden."""
        return self.ready

    def load(self) -> bool:
        """Load the model (override to read weights); sets and returns `ready`."""
        self.ready = True
        return self.ready

    def start(self) -> None:
        """Called once the server has registered the model."""
        self.ready = True

    async def start_engine(self) -> None:
        """Start an engine the model needs (when ``engine`` is set)."""
        self.ready = True

    def stop(self) -> None:
        """Called when the server stops or the model is unloaded."""
        self.ready = False

    def stop_engine(self) -> None:
        self.ready = False


class InferenceModel(BaseKServeModel):
    """A model that answers inference requests."""

    @abstractmethod
    async def __call__(
        self,
        body: Body,
        headers: Headers | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> InferReturnType: ...

    def get_input_types(self) -> list[dict[str, Any]]:
        """Input tensor metadata (name, datatype, shape) for the metadata endpoints."""
        return []

    def get_output_types(self) -> list[dict[str, Any]]:
        return []


class Model(InferenceModel):
    """Subclass this and override `preprocess`, `predict`, `postprocess` or `explain`.

    By default `predict` forwards to the predictor (``--predictor_host``) and `explain` to the
    explainer (``--explainer_host``) through the model's hops.
    """

    def __init__(self, name: str, return_response_headers: bool = False) -> None:
        super().__init__(name)
        self.explainer_host: str | None = None
        self.enable_latency_logging = False
        self.required_response_headers = return_response_headers
        self.predictor_config: PredictorConfig | None = None
        # Built from the configuration when the server starts (see gateway.hops).
        self.predictor_hop: Hop | None = None
        self.explainer_hop: Hop | None = None
        # version ("" for none) -> (when fetched, the predictor's metadata under our name)
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}

    async def __call__(
        self,
        body: Body,
        headers: Headers | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
        *,
        response_headers: Headers | None = None,
    ) -> InferReturnType:
        """Run preprocess -> predict (or explain) -> postprocess on one request.

        `response_headers`, when given, collects headers that `predict` and `postprocess` set
        (for models created with ``return_response_headers=True``).
        """
        headers = {} if headers is None else headers
        out_headers: Headers = {} if response_headers is None else response_headers
        extra = (out_headers,) if self.required_response_headers else ()
        cls = type(self)
        # Stages left at their defaults do nothing: skip them (and their spans) entirely.
        if cls.preprocess is Model.preprocess:
            payload = body
        else:
            with request_context.stage("preprocess"):
                payload = await _call(self.preprocess, body, headers)
        payload = self.validate(payload)
        # A default predict / explain only forwards: its hop's span is the one to see.
        if verb is InferenceVerb.EXPLAIN:
            with request_context.stage("explain", cls.explain is not Model.explain):
                response = await _call(self.explain, payload, headers)
        elif verb is InferenceVerb.PREDICT:
            with request_context.stage("predict", cls.predict is not Model.predict):
                response = await _call(self.predict, payload, headers, *extra)
        else:
            raise NotImplementedError(f"unknown verb {verb}")
        if cls.postprocess is not Model.postprocess:
            with request_context.stage("postprocess"):
                response = await _call(self.postprocess, response, headers, *extra)
        if self.enable_latency_logging:
            self._log_latency(headers)
        return response

    def forwards_unchanged(self) -> bool:
        """Whether predictions are the predictor's answer to the very request received:
        no preprocess, predict or postprocess of its own, and a predictor to forward to."""
        cls = type(self)
        return (
            self.predictor_hop is not None
            and cls.preprocess is Model.preprocess
            and cls.predict is Model.predict
            and cls.postprocess is Model.postprocess
        )

    def passes_through(self, protocol: str, binary: bool) -> bool:
        """Whether a request body that came on `protocol` (binary: with the binary extension)
        can go to the predictor undecoded: the model only forwards, and its hop takes that."""
        hop = self.predictor_hop
        return (
            hop is not None
            and self.forwards_unchanged()
            and hop.accepts_passthrough(protocol, binary)
        )

    async def predictor_metadata(self, version: str | None = None) -> dict[str, Any] | None:
        """For a model that forwards unchanged, the predictor's metadata of its model (inputs,
        outputs, platform, versions) under this model's name, kept `METADATA_TTL` seconds;
        None otherwise, or when the predictor's protocol has none (v1)."""
        hop = self.predictor_hop
        if hop is None or not self.forwards_unchanged():
            return None
        key, now = version or "", time.monotonic()
        cached = self._metadata.get(key)
        if cached is not None and now - cached[0] < METADATA_TTL:
            return cached[1]
        metadata = await hop.model_metadata(self.name, {}, version)
        if metadata is None:
            return None
        metadata = {**metadata, "name": self.name}
        self._metadata[key] = (now, metadata)
        return metadata

    async def check_forwarded(self, request: Any) -> None:
        """Refuse, before any byte goes upstream, a v2 request that a model which forwards
        unchanged would send on as it is: a body passed through is checked for structure
        (`validate`), and every v2 request against the inputs the predictor declares."""
        hop = self.predictor_hop
        if hop is None:
            return
        if isinstance(request, Passthrough):
            body, length = request.body, request.json_length
            if request.protocol == "v2":
                described = await offload.run(
                    lambda: validate.rest_request(body, length),
                    rest_codec.decode_weight(body, length),
                    uses_numpy=validate.rest_uses_numpy(len(body), length),
                )
            elif request.protocol == "grpc-v2":
                described = await offload.run(
                    lambda: validate.grpc_request(body),
                    grpc_codec.decode_weight(body, grpc_codec.RAW_INPUT_FIELD),
                    uses_numpy=False,
                )
            else:
                return
        elif isinstance(request, InferRequest):
            described = [(t.name, t.datatype, t.shape) for t in request.inputs]
        else:
            return
        declared = (await hop.facts()).inputs
        if declared:
            validate.against(described, declared)

    async def predictor_ready(self) -> bool:
        """With KServe's predictor health check on, whether the predictor is ready (a
        transformer is only as ready as its predictor); True when the check is off."""
        config, hop = self.predictor_config, self.predictor_hop
        if config is None or hop is None or not config.predictor_health_check:
            return True
        return bool(await hop.ready(self.name))

    def validate(self, payload: Any) -> Any:
        """Refuse payload shapes no protocol accepts, before they reach `predict`."""
        if isinstance(payload, dict):
            for key in ("inputs", "instances"):
                if key in payload and not isinstance(payload[key], list):
                    raise InvalidInput(f"expected {key!r} to be a list")
        return payload

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: Headers | None = None
    ) -> Any:
        """Transform the request; `payload` is a dict for v1, an `InferRequest` for v2."""
        return payload

    async def predict(
        self,
        payload: Any,
        headers: Headers | None = None,
        response_headers: Headers | None = None,
    ) -> Any:
        """Run inference; by default, forward `payload` to the predictor."""
        if self.predictor_hop is None:
            raise Unimplemented(
                f"model {self.name!r} has no predictor: start the gateway with "
                "--predictor_host HOST:PORT, or give the model a predict() of its own"
            )
        return await self.predictor_hop.infer(payload, headers or {})

    async def explain(self, payload: Any, headers: Headers | None = None) -> Any:
        """Explain a prediction; by default, forward `payload` to the explainer."""
        if self.explainer_hop is None:
            raise Unimplemented(
                f"model {self.name!r} has no explainer: start the gateway with "
                "--explainer_host HOST:PORT, or give the model an explain() of its own"
            )
        return await self.explainer_hop.explain(payload, headers or {})

    async def postprocess(
        self,
        result: Any,
        headers: Headers | None = None,
        response_headers: Headers | None = None,
    ) -> Any:
        """Transform the response; a dict for v1, an `InferResponse` for v2."""
        return result

    def _log_latency(self, headers: Headers) -> None:
        context = request_context.current()
        if context is None:
            return
        logs.info(
            logger,
            "requestId: %s, preprocess_ms: %.3f, explain_ms: %.3f, predict_ms: %.3f, "
            "postprocess_ms: %.3f",
            headers.get("x-request-id", context.request_id),
            context.stage_seconds("preprocess") * 1000,
            context.stage_seconds("explain") * 1000,
            context.stage_seconds("predict") * 1000,
            context.stage_seconds("postprocess") * 1000,
            trace=None if context.tracer is None else tracing_ids.log_ids(),
        )


async def _call(handler: Callable[..., Any], *args: Any) -> Any:
    """Await an async handler; run a sync one in the loop's executor (with our context)."""
    if _is_async(handler):
        return await handler(*args)
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    result = await loop.run_in_executor(None, functools.partial(context.run, handler, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


# Whether a stage's function is async, by function: inspect's answer costs a dozen calls, and a
# request asks it for every stage.
_ASYNC: dict[Any, bool] = {}


def _is_async(handler: Callable[..., Any]) -> bool:
    function = getattr(handler, "__func__", handler)  # a bound method's function
    try:
        known = _ASYNC.get(function)
    except TypeError:  # an unhashable callable object
        return inspect.iscoroutinefunction(handler)
    if known is None:
        if len(_ASYNC) >= 1024:  # handlers made anew (not methods): asked again
            _ASYNC.clear()
        known = _ASYNC[function] = inspect.iscoroutinefunction(handler)
    return known
