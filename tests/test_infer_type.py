"""KServe's data model module (``kserve.protocol.infer_type``): the names it exports.

The classes themselves are tested beside their own modules: `tests/test_tensor.py`,
`tests/test_infer_request.py`, `tests/test_infer_response.py`."""

from __future__ import annotations

import gateway

# --- exports --------------------------------------------------------------------------------


def test_the_kserve_names_are_exported() -> None:
    from gateway import infer_type

    for name in (
        "InferInput",
        "InferOutput",
        "InferRequest",
        "InferResponse",
        "RequestedOutput",
        "serialize_byte_tensor",
        "deserialize_bytes_tensor",
        "to_grpc_parameters",
        "to_http_parameters",
    ):
        assert name in gateway.__all__
        assert name in infer_type.__all__
        assert getattr(gateway, name) is getattr(infer_type, name)
    for name in ("InvalidInput", "InferenceError"):
        assert name in gateway.__all__
    assert issubclass(gateway.InvalidInput, ValueError)
