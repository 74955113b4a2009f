"""The v2 data model under KServe's module name (``kserve.protocol.infer_type``)."""

from gateway.codecs.bytes_tensor import deserialize_bytes_tensor, serialize_byte_tensor
from gateway.codecs.parameters import to_grpc_parameters, to_http_parameters
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.tensor import InferInput, InferOutput, RequestedOutput

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "deserialize_bytes_tensor",
    "serialize_byte_tensor",
    "to_grpc_parameters",
    "to_http_parameters",
]
