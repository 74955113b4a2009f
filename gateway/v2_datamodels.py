"""The REST v2 request and response objects that KServe's signatures name
(``kserve.protocol.rest.v2_datamodels``): plain dataclasses with the Open Inference Protocol's
fields. `InferRequest.from_inference_request` takes an `InferenceRequest`; `as_dict` gives the
JSON form (fields left as None omitted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "as_dict",
]

Parameters = dict[str, Any]


@dataclass
class RequestInput:
    """An input tensor: ``data`` is a (flat or nested) list."""

    name: str
    shape: list[int]
    datatype: str
    data: Any
    parameters: Parameters | None = None


@dataclass
class RequestOutput:
    """An output the request asks for (``binary_data`` among its parameters)."""

    name: str
    parameters: Parameters | None = None


@dataclass
class ResponseOutput:
    name: str
    shape: list[int]
    datatype: str
    data: Any
    parameters: Parameters | None = None


@dataclass
class InferenceRequest:
    inputs: list[RequestInput]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestOutput] | None = None


@dataclass
class InferenceResponse:
    model_name: str
    outputs: list[ResponseOutput]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None


def as_dict(value: Any) -> dict[str, Any]:
    """The JSON form of one of these objects, fields that are None left out."""
    return dataclasses.asdict(
        value, dict_factory=lambda items: {k: v for k, v in items if v is not None}
    )
