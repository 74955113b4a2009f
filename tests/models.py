"""Small models the server tests serve."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from gateway import InferOutput, InferRequest, InferResponse
from gateway.errors import InvalidInput, UpstreamStatusError
from gateway.hops.mock import echo
from gateway.model import Model


def echo_outputs(request: InferRequest) -> list[InferOutput]:
    """Each input back as an output of the same name, its bytes untouched."""
    response = echo(request)
    assert isinstance(response, InferResponse)
    return response.outputs


class EchoModel(Model):
    """v2: answers each input back as an output; v1: instances back as predictions."""

    def __init__(self, name: str = "echo") -> None:
        super().__init__(name)
        self.ready = True

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=echo_outputs(payload),
            )
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput("expected {'instances': [...]}")
        return {"predictions": payload["instances"]}

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=echo_outputs(payload),
            )
        if not isinstance(payload, dict):
            raise InvalidInput("expected a JSON object")
        return {"explanations": payload.get("instances")}


class SlowModel(EchoModel):
    """Echo after `delay` seconds: for requests in flight during a shutdown."""

    def __init__(self, name: str = "slow", delay: float = 0.5) -> None:
        super().__init__(name)
        self.delay = delay

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        await asyncio.sleep(self.delay)
        return await super().predict(payload, headers)


class SyncModel(Model):
    """Sync handlers, which the server must run off the event loop."""

    def __init__(self, name: str = "sync") -> None:
        super().__init__(name)
        self.ready = True

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:  # type: ignore[override]
        return payload

    def predict(  # type: ignore[override]
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=echo_outputs(payload)
        )


class Scale(Model):
    """v1: each of ``instances`` (or a previous step's ``predictions``) times `factor`;
    v2: each input times `factor`, as an output named after the model."""

    def __init__(self, name: str, factor: float) -> None:
        super().__init__(name)
        self.factor = factor
        self.ready = True
        self.headers: list[dict[str, str]] = []

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.headers.append(dict(headers or {}))
        if isinstance(payload, InferRequest):
            outputs = []
            for tensor in payload.inputs:
                out = InferOutput(f"{tensor.name}", tensor.shape, tensor.datatype)
                out.set_data_from_numpy(tensor.as_numpy() * np.float32(self.factor))
                outputs.append(out)
            return InferResponse(payload.id or "", self.name, outputs)
        values = payload.get("instances", payload.get("predictions"))
        return {"predictions": [value * self.factor for value in values]}


class Animal(Model):
    """v1: answers which model it is, for a Switch or a Splitter to be seen choosing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        return {"predictions": [self.name]}


class Busy(Model):
    """Answers 503 to the first `failures` calls, then works."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.ready = True
        self.failures = failures
        self.calls = 0

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise UpstreamStatusError("busy, try again", status=503)
        return {"predictions": ["recovered"]}


class Flaky(Model):
    """Answers 503 to the first attempt of each request (by ``x-request-id``), then works:
    one retry always gets through, whatever ran before."""

    def __init__(self, name: str = "flaky") -> None:
        super().__init__(name)
        self.ready = True
        self.seen: set[str] = set()

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        request_id = (headers or {}).get("x-request-id", "")
        if request_id not in self.seen:
            self.seen.add(request_id)
            raise UpstreamStatusError("busy, try again", status=503)
        return {"predictions": ["recovered"]}
