"""Tensors in and out of the wire forms: REST bodies, gRPC messages and v1 values.

What `InferRequest` and `InferResponse` (and the hops) build their messages with. Each function
takes tensors and plain fields; the byte-level work is the pure codecs' (`gateway.codecs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from gateway.codecs import grpc as grpc_codec
from gateway.codecs import rest as rest_codec
from gateway.codecs import v1 as v1_codec
from gateway.codecs.tensor_fields import TensorFields
from gateway.tensor import Buffer, RequestedOutput, Tensor

T = TypeVar("T", bound=Tensor)

__all__ = [
    "fill_grpc_tensors",
    "grpc_tensors",
    "requested_outputs",
    "rest_entries",
    "rest_form",
    "rest_tensors",
    "v1_tensors",
    "v1_value",
]


# REST


def rest_tensors(cls: type[T], header: dict[str, Any], key: str, tail: memoryview) -> list[T]:
    """The tensors listed under `key` of a REST body's JSON, binary ones over `tail`."""
    return [_tensor(cls, fields) for fields in rest_codec.read_entries(header, key, tail)]


def rest_entries(
    tensors: Iterable[tuple[Tensor, bool]], raws: list[Buffer]
) -> list[dict[str, Any]]:
    """Each tensor's JSON object; the bytes of those going binary are added to `raws`."""
    entries = []
    for tensor, binary in tensors:
        name, datatype, shape, parameters = (
            tensor.name,
            tensor.datatype,
            tensor.shape,
            tensor.parameters,
        )
        if binary:
            raw = tensor.wire_bytes()
            raws.append(raw)
            entry = rest_codec.tensor_entry(name, datatype, shape, parameters, binary_size=len(raw))
        else:
            entry = rest_codec.tensor_entry(
                name, datatype, shape, parameters, data=tensor.json_data()
            )
        entries.append(entry)
    return entries


def rest_form(
    header: dict[str, Any],
    raws: Sequence[Buffer],
    key: str = "",
    tensors: Sequence[Tensor] = (),
) -> tuple[bytes | dict[str, Any], int | None]:
    """KServe's ``to_rest()`` form: the JSON as a dict when nothing binary follows it, else
    the joined body and its JSON length. Data that `tensors` were given as a Python list
    stays that list (nested, say), as KServe's does; BYTES stay text, for JSON."""
    for entry, tensor in zip(header.get(key) or (), tensors, strict=False):
        given = tensor.given_list()
        if "data" in entry and given is not None and tensor.datatype != "BYTES":
            entry["data"] = given
    if raws:
        return rest_codec.join_body(header, raws)
    return rest_codec.plain(header), None


def requested_outputs(
    entries: Sequence[tuple[str, dict[str, Any] | None]] | None,
) -> list[RequestedOutput] | None:
    """The requested outputs a codec read, as `RequestedOutput` values."""
    if entries is None:
        return None
    return [RequestedOutput(name, parameters) for name, parameters in entries]


# gRPC


def grpc_tensors(
    cls: type[T], messages: Sequence[Any], raws: Sequence[Buffer], kind: str
) -> list[T]:
    """The tensors of `InferInputTensor` / `InferOutputTensor` messages and raw contents."""
    return [_tensor(cls, fields) for fields in grpc_codec.read_tensors(messages, raws, kind)]


def fill_grpc_tensors(repeated: Any, tensors: Iterable[Tensor], raw: bool) -> list[Buffer]:
    """Add a message per tensor to `repeated`; returns the raw contents when `raw`, else the
    data goes into each message's typed contents."""
    raws: list[Buffer] = []
    for tensor in tensors:
        message = repeated.add()
        grpc_codec.describe_tensor(
            message, tensor.name, tensor.datatype, tensor.shape, tensor.parameters
        )
        if raw:
            raws.append(tensor.wire_bytes())
        else:
            grpc_codec.fill_contents(message, tensor.datatype, tensor.name, tensor.as_numpy())
    return raws


# v1


def v1_value(tensors: Sequence[Tensor], what: str) -> Any:
    """The v1 value (``instances`` or ``predictions``) for `tensors`."""
    columns = [v1_codec.Column(t.name, t.datatype, t.as_numpy()) for t in tensors]
    return v1_codec.to_v1(columns, what)


def v1_tensors(value: Any, cls: type[T], what: str) -> list[T]:
    """Tensors of class `cls` for a v1 ``instances`` / ``predictions`` value."""
    tensors = []
    for column in v1_codec.from_v1(value, what):
        tensor = cls(column.name, list(column.array.shape), column.datatype)
        tensor.set_data_from_numpy(column.array)
        tensors.append(tensor)
    return tensors


def _tensor(cls: type[T], fields: TensorFields) -> T:
    """A tensor of what a codec read, checked now, so bad data is refused on arrival. (Built
    as each is read: the first fault in a message is the one reported.)"""
    if fields.raw is not None:
        tensor: T = cls.from_raw(
            fields.name, fields.shape, fields.datatype, fields.raw, fields.parameters
        )
        return tensor
    tensor = cls(
        fields.name, fields.shape, fields.datatype, data=fields.data, parameters=fields.parameters
    )
    tensor.as_numpy()
    return tensor
