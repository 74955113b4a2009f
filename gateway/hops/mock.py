"""`MockHop`: a hop with no server behind it, for testing transformers (ours and users')."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.hops.base import Headers, Hop
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.tensor import InferOutput

Handler = Callable[[Any, Headers], Any]


@dataclass(frozen=True)
class Call:
    """One call a `MockHop` received."""

    method: str
    payload: Any
    headers: Headers
    # Which attempt of its call it was (a retrying wrapper around the mock counts from 1).
    attempt: int = 1


def echo(payload: Any, headers: Headers | None = None) -> Any:
    """Answer as an identity model would: v2 inputs back as outputs, v1 instances back as
    predictions. Tensor bytes are passed on untouched."""
    if isinstance(payload, InferRequest):
        outputs = []
        for tensor in payload.inputs:
            if tensor.is_raw:
                output = InferOutput.from_raw(
                    tensor.name, tensor.shape, tensor.datatype, tensor.wire_bytes()
                )
            else:
                output = InferOutput(tensor.name, tensor.shape, tensor.datatype)
                output.data = tensor.as_numpy()
            outputs.append(output)
        return InferResponse(payload.id or "", payload.model_name, outputs)
    if isinstance(payload, dict):
        return {"predictions": payload.get("instances", [])}
    return payload


class MockHop(Hop):
    """Answers with `handler(payload, headers)` (sync or async; raising works too).

    Records every call in `calls`, so a test can check what its `preprocess` sent on:

        hop = MockHop(lambda request, headers: my_response)
        model.predictor_hop = hop
        await model(request)
        assert hop.calls[0].payload.inputs[0].name == "features"
    """

    def __init__(
        self,
        handler: Handler = echo,
        *,
        explain_handler: Handler | None = None,
        ready: bool = True,
        name: str = "predictor",
        protocol: str = "v2",
    ) -> None:
        self.handler = handler
        self.explain_handler = explain_handler or handler
        self.is_ready = ready
        self.name = name
        self.protocol = protocol
        self.calls: list[Call] = []
        self.closed = False

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.attempt("infer", payload, headers, 1)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self.attempt("explain", payload, headers, 1)

    async def attempt(self, verb: str, payload: Any, headers: Headers, number: int) -> Any:
        self.calls.append(Call(verb, payload, dict(headers), number))
        handler = self.explain_handler if verb == "explain" else self.handler
        return await _answer(handler, payload, headers)

    async def ready(self, model_name: str | None = None) -> bool:
        return self.is_ready

    async def aclose(self) -> None:
        self.closed = True


async def _answer(handler: Handler, payload: Any, headers: Headers) -> Any:
    result = handler(payload, headers)
    if inspect.isawaitable(result):
        result = await result
    return result
