"""Parameters between REST (JSON values) and gRPC (`InferParameter`).

bool, int, float and str survive both ways: a float travels as ``double_param`` (never
truncated to an int), an int too large for int64 as ``uint64_param``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from gateway._proto import pb
from gateway.errors import InvalidInput

ParamValue = bool | int | float | str
Parameters = dict[str, ParamValue]

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


def set_grpc_parameter(target: pb.InferParameter, key: str, value: object) -> None:
    """Write one REST value (or any package's `InferParameter`) into `target` in place."""
    if _is_message(value):
        value = http_value(value)
    if isinstance(value, bool):  # before int: bool is an int
        target.bool_param = value
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            target.int64_param = value
        elif 0 <= value <= _UINT64_MAX:
            target.uint64_param = value
        else:
            raise InvalidInput(f"parameter {key!r}: {value} does not fit in 64 bits")
    elif isinstance(value, float):
        target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise InvalidInput(
            f"parameter {key!r}: a {type(value).__name__} cannot be sent over gRPC "
            "(bool, int, float and str can)"
        )


def fill_grpc_parameters(
    target: MutableMapping[str, pb.InferParameter], parameters: Mapping[str, object]
) -> None:
    """Write REST parameters into a protobuf parameters map."""
    for key, value in parameters.items():
        set_grpc_parameter(target[key], key, value)


def to_grpc_parameters(parameters: Mapping[str, Any]) -> dict[str, pb.InferParameter]:
    """Convert REST parameters (or a protobuf map) to `InferParameter` messages."""
    converted: dict[str, pb.InferParameter] = {}
    for key, value in parameters.items():
        param = pb.InferParameter()
        set_grpc_parameter(param, key, value)
        converted[key] = param
    return converted


def http_value(param: Any) -> ParamValue | None:
    """The JSON value of one `InferParameter` (None when no field is set)."""
    choice = param.WhichOneof("parameter_choice")
    return None if choice is None else getattr(param, choice)


def _is_message(value: object) -> bool:
    # Duck-typed: tritonclient's and kserve's InferParameter are other classes of the same shape.
    return hasattr(value, "WhichOneof")


def to_http_parameters(parameters: Mapping[str, Any]) -> Parameters:
    """Convert gRPC parameters (a protobuf map or a dict) to plain JSON values."""
    converted: Parameters = {}
    for key, value in parameters.items():
        if _is_message(value):
            plain = http_value(value)
            if plain is not None:
                converted[key] = plain
        else:
            converted[key] = value
    return converted
