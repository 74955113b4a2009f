"""Small models the server tests serve."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import InferOutput, InferRequest, InferResponse
from gateway.errors import InvalidInput
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
