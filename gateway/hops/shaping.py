"""`Shaping`: a dict request in, a dict answer out, whatever protocol the upstream speaks.

Models of the v1 protocol (and KServe-style code) hand their hop a dict: v1 ``instances`` or
a v2 JSON request. The transports take one payload shape, an `InferRequest` (or a body passed
through undecoded), so this outermost wrapper shapes a dict once per call, before retries:

    upstream   the dict goes as                       the answer comes back as
    v1         its JSON, unchanged (a Passthrough)    the upstream's JSON, parsed
    v2, gRPC   an InferRequest                        v1 ``predictions`` or v2 JSON, as asked

An "auto" hop's protocol is learned first when not yet known; to an upstream that speaks v2
and v1, a dict goes as v2 (the protocol found first).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidInput
from gateway.hops.base import Headers, Hop, HopWrapper
from gateway.hops.common import decoded, json_body, unsupported_payload
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import v1_tensors, v1_value
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.tensor import InferInput

__all__ = ["Shaping", "dict_response", "v2_request"]


class Shaping(HopWrapper):
    """Turns a dict into what the inner hop takes, and the answer back into the dict's form.

    `model_name` names the model a v2 request built from a dict is for (the upstream's)."""

    def __init__(self, inner: Hop, model_name: str = "") -> None:
        super().__init__(inner)
        self.model_name = model_name

    async def infer(self, payload: Any, headers: Headers) -> Any:
        if isinstance(payload, dict):
            if await self._takes_v1():
                answer = await self.inner.infer(self._as_body(payload), headers)
                return self._parsed(answer)
            response = await self.inner.infer(v2_request(payload, self.model_name), headers)
            return decoded(self.name, lambda: dict_response(response, payload))
        return await self.inner.infer(_checked(payload), headers)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        """Explanations are free-form JSON: the parsed answer is returned as it is. A v1
        explainer takes any JSON value, not only an object."""
        if isinstance(payload, InferRequest | Passthrough):
            return await self.inner.explain(payload, headers)
        if await self._takes_v1():
            return self._parsed(await self.inner.explain(self._as_body(payload), headers))
        if isinstance(payload, dict):
            payload = v2_request(payload, self.model_name)
        return await self.inner.explain(_checked(payload), headers)

    async def _takes_v1(self) -> bool:
        if self.protocol != "auto":
            return self.protocol == "v1"
        # Not known yet: ask (bounded, within the deadline).
        await self.inner.facts()
        return self.protocol == "v1"

    def _as_body(self, payload: Any) -> Passthrough:
        return Passthrough("v1", self.model_name, json_body(payload))

    def _parsed(self, answer: PassthroughResponse) -> Any:
        return decoded(self.name, lambda: orjson.loads(answer.body))


def v2_request(payload: dict[str, Any], model_name: str) -> InferRequest:
    """The v2 request for a dict: v1 ``instances`` as tensors, or a v2 JSON request."""
    if "instances" in payload:
        inputs = v1_tensors(payload["instances"], InferInput, "instances")
        parameters = payload.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        return InferRequest(model_name, inputs, parameters=parameters)
    if "inputs" in payload:
        return InferRequest.from_inference_request(payload, model_name)
    raise InvalidInput("a request needs v1 'instances' or v2 'inputs'")


def dict_response(response: InferResponse, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to a dict `request` in its own form: v1 ``predictions``, or v2 JSON."""
    if "instances" in request:
        return {"predictions": v1_value(response.outputs, "predictions")}
    return response.to_json_dict()


def _checked(payload: Any) -> InferRequest | Passthrough:
    if isinstance(payload, InferRequest | Passthrough):
        return payload
    raise unsupported_payload(payload)
