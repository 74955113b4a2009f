"""A transformer as a user writes one, served by ``gateway serve --transformer FILE.py:Doubler``.

`preprocess` doubles every FP32 input (v2) or every instance (v1); `postprocess` says in the
answer what it was given. Each refuses a payload of any other type, so a request that
succeeds proves which types the stages saw: an `InferRequest` and an `InferResponse` for v2
REST (JSON or binary) and gRPC clients, whatever protocol the predictor speaks; dicts for v1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway import InferInput, InferRequest, InferResponse
from gateway.errors import InferenceError
from gateway.model import Model

SAW = "postprocess_saw"


class Doubler(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Any:
        if isinstance(payload, dict) and "instances" in payload:
            return {**payload, "instances": (np.asarray(payload["instances"]) * 2).tolist()}
        if not isinstance(payload, InferRequest):
            raise InferenceError(f"preprocess was given a {type(payload).__name__}")
        inputs = []
        for tensor in payload.inputs:
            if tensor.datatype == "FP32":
                doubled = InferInput(tensor.name, tensor.shape, "FP32")
                doubled.set_data_from_numpy(tensor.as_numpy() * 2)
                tensor = doubled
            inputs.append(tensor)
        return InferRequest(
            payload.model_name,
            inputs,
            payload.id,
            parameters=payload.parameters,
            request_outputs=payload.request_outputs,
        )

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        if isinstance(result, dict) and "predictions" in result:
            return {**result, SAW: "dict"}
        if not isinstance(result, InferResponse):
            raise InferenceError(f"postprocess was given a {type(result).__name__}")
        result.parameters = {**(result.parameters or {}), SAW: "InferResponse"}
        return result
