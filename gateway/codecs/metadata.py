"""Model and server metadata between gRPC messages and the v2 REST (JSON) form.

The JSON form is the one both doors and both transports share: a `ModelMetadataResponse`
read from an upstream becomes the dict a REST client gets, and a dict (an upstream's REST
answer, or the gateway's own) becomes the message a gRPC client gets. Parameters (MLServer's
addition) travel both ways; a REST field gRPC has no place for is left out of the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway._proto import pb
from gateway.codecs.parameters import fill_grpc_parameters, to_http_parameters
from gateway.errors import InvalidInput

__all__ = ["model_metadata_dict", "model_metadata_message", "server_metadata_dict"]

_Tensor = pb.ModelMetadataResponse.TensorMetadata


def model_metadata_dict(message: Any) -> dict[str, Any]:
    """The JSON form of a `ModelMetadataResponse` (ours, or another package's)."""
    metadata: dict[str, Any] = {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": [_tensor_dict(t) for t in message.inputs],
        "outputs": [_tensor_dict(t) for t in message.outputs],
    }
    parameters = getattr(message, "parameters", None)
    if parameters:
        metadata["parameters"] = to_http_parameters(parameters)
    return metadata


def model_metadata_message(metadata: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The `ModelMetadataResponse` for a JSON form (an upstream's answer: checked as read)."""
    try:
        message = pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions") or [],
            platform=metadata.get("platform") or "",
        )
        for key in ("inputs", "outputs"):
            for tensor in metadata.get(key) or []:
                _fill_tensor(getattr(message, key).add(), tensor)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"model metadata cannot be sent over gRPC: {exc!r}") from None
    fill_grpc_parameters(message.parameters, metadata.get("parameters") or {})
    return message


def server_metadata_dict(message: Any) -> dict[str, Any]:
    """The JSON form of a `ServerMetadataResponse`."""
    return {
        "name": message.name,
        "version": message.version,
        "extensions": list(message.extensions),
    }


def _tensor_dict(tensor: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    parameters = getattr(tensor, "parameters", None)
    if parameters:
        entry["parameters"] = to_http_parameters(parameters)
    return entry


def _fill_tensor(message: Any, tensor: Mapping[str, Any]) -> None:
    message.name = tensor["name"]
    message.datatype = tensor["datatype"]
    message.shape.extend(tensor["shape"])
    fill_grpc_parameters(message.parameters, tensor.get("parameters") or {})
