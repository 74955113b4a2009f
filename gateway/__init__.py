"""An Open Inference Protocol gateway with KServe's Python API.

Port a KServe transformer by changing ``from kserve import ...`` to ``from gateway import ...``.
"""

from gateway.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    UnsupportedProtocol,
)
from gateway.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    deserialize_bytes_tensor,
    serialize_byte_tensor,
    to_grpc_parameters,
    to_http_parameters,
)

__version__ = "0.1.0"

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "RequestedOutput",
    "UnsupportedProtocol",
    "__version__",
    "deserialize_bytes_tensor",
    "serialize_byte_tensor",
    "to_grpc_parameters",
    "to_http_parameters",
]
