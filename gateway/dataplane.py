"""The protocol-neutral core that the REST and gRPC servers both adapt.

It finds models, answers health and metadata, runs inference, and manages the repository.
The servers only decode their wire format into calls here and encode what comes back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import InferenceError, ModelNotFound, ModelNotReady, Overloaded
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.model import BaseKServeModel, InferenceModel, InferenceVerb, Model
from gateway.model_repository import ModelRepository
from gateway.version import __version__

Headers = dict[str, str]


class DataPlane:
    """Everything a request can ask of the server, whichever protocol it came in on."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        server_name: str = "inference-hop-gateway",
        server_version: str = __version__,
        max_concurrency: int | None = None,
    ) -> None:
        self.repository = repository
        self.server_name = server_name
        self.server_version = server_version
        # Set while models load at start-up and once a stop has begun: not ready either way.
        self.starting = True
        self.draining = False
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    # Health and metadata

    def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        """Ready when started, not draining, and every registered model is ready."""
        if self.starting or self.draining:
            return False
        models = self.repository.get_models()
        for name, model in models.items():
            if not await self.repository.is_model_ready(name):
                return False
            if not await _predictor_ready(model):
                return False
        return True

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.server_name,
            "version": self.server_version,
            "extensions": ["binary_tensor_data", "model_repository"],
        }

    def model_names(self) -> list[str]:
        return list(self.repository.get_models())

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        model = self.registered(name)
        if self.draining or not await self.repository.is_model_ready(name):
            return False
        return await _predictor_ready(model)

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.registered(name)
        if isinstance(model, Model):
            upstream = await model.predictor_metadata(version)
            if upstream is not None:
                return upstream
        inputs: list[dict[str, Any]] = []
        outputs: list[dict[str, Any]] = []
        if isinstance(model, InferenceModel):
            inputs, outputs = model.get_input_types(), model.get_output_types()
        return {
            "name": name,
            "versions": [version] if version else [],
            "platform": "",
            "inputs": inputs,
            "outputs": outputs,
        }

    def registered(self, name: str) -> BaseKServeModel:
        model = self.repository.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    async def ready_model(self, name: str) -> InferenceModel:
        """The model called `name`, if it can serve now."""
        model = self.registered(name)
        if self.draining or not await model.healthy():
            raise ModelNotReady(name)
        if not isinstance(model, InferenceModel):
            raise InferenceError(f"model {name!r} ({type(model).__name__}) cannot infer")
        return model

    # Inference

    def admitted(self) -> _Admission:
        """Count one inference request in for the block; refuse it at once when the limit
        is reached."""
        return _Admission(self)

    def passthrough(self, name: str, protocol: str, binary: bool, verb: InferenceVerb) -> bool:
        """Whether a request body on `protocol` can go to the predictor without decoding:
        the model only forwards, and its hop speaks that protocol (and framing)."""
        model = self.repository.get_model(name)
        if verb is not InferenceVerb.PREDICT or not isinstance(model, Model):
            return False
        return model.passes_through(protocol, binary)

    async def infer(
        self,
        name: str,
        request: InferRequest | dict[str, Any] | Any,
        headers: Headers,
        response_headers: Headers,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        """Run the model on `request`; an `InferResponse` answers as the client asked."""
        model = await self.ready_model(name)
        if (
            isinstance(model, Model)
            and verb is InferenceVerb.PREDICT
            and model.forwards_unchanged()
        ):
            await model.check_forwarded(request)
        # Taken before the model runs: preprocess may rewrite the request for the predictor,
        # but the client's own choices decide the answer's form.
        choices = _client_choices(request)
        kwargs: dict[str, Any] = {"headers": headers, "verb": verb}
        if hasattr(model, "required_response_headers"):
            kwargs["response_headers"] = response_headers
        result = await model(request, **kwargs)
        if choices is not None and isinstance(result, InferResponse):
            request_id, binary, requested = choices
            result.use_binary_outputs = binary
            result.requested_outputs = requested
            if not result.id and request_id:
                result.id = request_id
            if not result.model_name:
                result.model_name = name
        return result

    # Model repository extension

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        index = []
        for name in self.repository.get_models():
            ready = await self.repository.is_model_ready(name)
            if ready_only and not ready:
                continue
            entry = {"name": name, "state": "READY" if ready else "UNAVAILABLE"}
            if not ready:
                entry["reason"] = "not loaded"
            index.append(entry)
        return index

    async def load(self, name: str) -> None:
        # load() reads weights: keep it off the event loop.
        loaded = await asyncio.get_running_loop().run_in_executor(None, self.repository.load, name)
        if not loaded:
            raise ModelNotReady(name, "load() did not make it ready")

    async def unload(self, name: str) -> None:
        self.repository.unload(name)


async def _predictor_ready(model: BaseKServeModel) -> bool:
    return not isinstance(model, Model) or await model.predictor_ready()


def _client_choices(request: Any) -> tuple[str | None, bool, Any] | None:
    if not isinstance(request, InferRequest):
        return None
    return request.id, request.use_binary_outputs, request.request_outputs


class _Admission:
    """`DataPlane.admitted` (a class, not a generator: it runs per request)."""

    __slots__ = ("_dataplane",)

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def __enter__(self) -> None:
        dataplane = self._dataplane
        limit = dataplane.max_concurrency
        if limit is not None and dataplane.in_flight >= limit:
            raise Overloaded(
                f"{dataplane.in_flight} requests in flight, the limit is {limit}", retry_after=1
            )
        dataplane.in_flight += 1

    def __exit__(self, *exc: object) -> None:
        self._dataplane.in_flight -= 1
