"""What passes between steps: a v1 dict (or any JSON object) in, a dict out; an `InferRequest`
in, an `InferResponse` out. These functions turn one into what the next use needs:

- `as_request`: a step's answer as the next step's request (``data: $response``); a v2
  response becomes a request whose inputs are its outputs, bytes untouched;
- `document`: the JSON a condition is tested on (a v2 message as its REST JSON);
- `merge`: an Ensemble's answers as one (an object keyed by step, or one v2 response whose
  outputs are named ``<step>.<output>``);
- `error_body`: a failed step's answer as KServe's router passes it on (the step's own JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson

from gateway.errors import GatewayError, UpstreamStatusError, http_status
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.tensor import InferInput, InferOutput, Tensor

__all__ = ["as_request", "document", "error_body", "merge"]

T = TypeVar("T", bound=Tensor)

# KServe's router's words for a failure of its own.
ROUTER_ERROR = "Failed to process request"

# One Ensemble step's answer, or what it failed with (a Soft step's failure is part of it).
Answer = Any


def as_request(answer: Any, request: Any) -> Any:
    """`answer` (a step's) as the request of the next step; `request` is the node's input."""
    if isinstance(answer, InferResponse):
        inputs = [_copy(output, InferInput, output.name) for output in answer.outputs]
        model = request.model_name if isinstance(request, InferRequest) else answer.model_name
        return InferRequest(model, inputs, request_id=answer.id or None)
    return answer


def document(value: Any) -> bytes:
    """The JSON a condition looks at: a dict as it is, a v2 message as its REST JSON (every
    tensor's data inline; NaN and infinity as null, bytes that are not UTF-8 replaced: a view
    to test, never sent), a failure as its error body."""
    if isinstance(value, GatewayError):
        value = error_body(value)
    elif isinstance(value, InferResponse):
        value = _message(value, outputs=_tensors(value.outputs), model_name=value.model_name)
    elif isinstance(value, InferRequest):
        value = _message(value, inputs=_tensors(value.inputs))
    return orjson.dumps(value)


def _message(message: InferRequest | InferResponse, **fields: Any) -> dict[str, Any]:
    if message.id:
        fields["id"] = message.id
    if message.parameters:
        fields["parameters"] = message.parameters
    return fields


def _tensors(tensors: Sequence[Tensor]) -> list[dict[str, Any]]:
    entries = []
    for tensor in tensors:
        data: list[Any] = tensor.as_numpy().ravel().tolist()
        if tensor.datatype == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
            "data": data,
        }
        if tensor.parameters:
            entry["parameters"] = tensor.parameters
        entries.append(entry)
    return entries


def error_body(exc: GatewayError) -> dict[str, Any]:
    """A failed step's answer as KServe's router gives it: the step's own JSON object when it
    answered with one, ``{"error": ...}`` for one it answered otherwise, and KServe's
    ``{"error": "Failed to process request", "cause": ...}`` for a failure of the router's
    own (no route matched, no answer from the service)."""
    if isinstance(exc, UpstreamStatusError):
        try:
            body = orjson.loads(exc.reason)
        except orjson.JSONDecodeError:
            body = None
        return body if isinstance(body, dict) else {"error": exc.reason}
    return {"error": ROUTER_ERROR, "cause": exc.reason}


def merge(request: Any, answers: Sequence[tuple[str, Answer]]) -> Any:
    """An Ensemble's answer: for a v2 request, one response with every step's outputs named
    ``<step>.<output>`` (a failed Soft step leaves ``<step>.error`` / ``<step>.status``
    parameters instead); otherwise an object of each step's answer (or error body) by step."""
    if not isinstance(request, InferRequest):
        return {
            key: error_body(answer) if isinstance(answer, GatewayError) else answer
            for key, answer in answers
        }
    outputs: list[InferOutput] = []
    parameters: dict[str, Any] = {}
    for key, answer in answers:
        if isinstance(answer, GatewayError):
            parameters[f"{key}.error"] = answer.reason
            parameters[f"{key}.status"] = http_status(answer)
            continue
        outputs.extend(_copy(o, InferOutput, f"{key}.{o.name}") for o in answer.outputs)
    return InferResponse(request.id or "", request.model_name, outputs,
                         parameters=parameters or None)  # fmt: skip


def _copy(tensor: Tensor, cls: type[T], name: str) -> T:
    """`tensor` as a `cls` called `name`, its data in the same form (wire bytes stay bytes,
    uncopied, so they travel on as they came)."""
    parameters = tensor.parameters
    if tensor.is_raw:
        raw = tensor.wire_bytes()
        copied: T = cls.from_raw(name, tensor.shape, tensor.datatype, raw, parameters)
        return copied
    return cls(name, tensor.shape, tensor.datatype, tensor.as_numpy(), parameters)
