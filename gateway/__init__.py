"""An Open Inference Protocol gateway with KServe's Python API.

Port a KServe transformer by changing ``kserve`` to ``gateway`` in its imports.
"""

from gateway import model_server
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
from gateway.model import BaseKServeModel, InferenceModel, InferenceVerb, Model
from gateway.model_repository import ModelRepository
from gateway.model_server import ModelServer
from gateway.predictor_config import PredictorConfig
from gateway.version import __version__

__all__ = [
    "BaseKServeModel",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InferenceModel",
    "InferenceVerb",
    "InvalidInput",
    "Model",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRepository",
    "ModelServer",
    "PredictorConfig",
    "RequestedOutput",
    "UnsupportedProtocol",
    "__version__",
    "deserialize_bytes_tensor",
    "model_server",
    "serialize_byte_tensor",
    "to_grpc_parameters",
    "to_http_parameters",
]
