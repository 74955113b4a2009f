"""What a v2 request is checked for at the door, before any byte of it goes upstream.

Two kinds of checks, both pure:

- *structure*, for a body that passes through undecoded (REST JSON or binary-extension body,
  serialized gRPC ``ModelInferRequest``): what decoding it would have refused, short of reading
  the tensor values themselves: a well-formed body with ``inputs``, each input's name, a known
  datatype, a shape of non-negative integers, and an element count that matches the JSON
  ``data``, the binary data size or the raw contents. (A decoded request was checked for all
  this, and more, as it was decoded.)
- *declared*, against the inputs a model's metadata declares (`TensorSpec`): no unknown input
  names, the declared datatype, a shape that fits the declared one (-1 is any size).

Each refusal is an `InvalidInput` naming the tensor and what is wrong with it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway._proto import pb
from gateway.codecs import arrays, json_depth, json_skim
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import rest as rest_codec
from gateway.codecs.datatypes import CONTENTS_FIELD, check_datatype, itemsize
from gateway.errors import InvalidInput

__all__ = [
    "Described",
    "TensorSpec",
    "against",
    "fits",
    "grpc_request",
    "rest_request",
    "rest_uses_numpy",
]

Buffer = bytes | bytearray | memoryview
# A BYTES element's length on the wire.
_LENGTH = struct.Struct("<I")
# A tensor of a request as the checks see it: name, datatype, shape.
Described = tuple[str, str, Sequence[int]]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a model declares in its metadata; -1 in `shape` is a dim of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def rest_request(body: Buffer, json_length: int | None) -> list[Described]:
    """Check a REST v2 request body (JSON, or JSON and binary tensors); return its inputs."""
    skimmed = json_skim.skim(body) if json_length is None and isinstance(body, bytes) else None
    if skimmed is None:
        header, tail = rest_codec.split_body(body, json_length)
    else:
        header, tail = skimmed, memoryview(b"")
    described: list[Described] = []
    for fields in rest_codec.read_entries(header, "inputs", tail):
        datatype, count = _described(fields.name, fields.datatype, fields.shape)
        if fields.raw is not None:
            _check_raw(fields.name, datatype, fields.shape, count, fields.raw)
        else:
            got = _json_count(fields.data, fields.name)
            if got != count:
                raise _mismatch(fields.name, got, fields.shape, count)
        described.append((fields.name, datatype, fields.shape))
    rest_codec.read_str(header, "id")
    rest_codec.read_parameters(header, "request")
    rest_codec.read_requested_outputs(header)
    return described


def rest_uses_numpy(body_size: int, json_length: int | None) -> bool:
    """Whether `rest_request` uses numpy on a body of this size (to import it beforehand)."""
    size = body_size if json_length is None else json_length
    return size >= json_skim.SKIM_FROM or json_depth.scans_with_numpy(size)


def grpc_request(data: Buffer) -> list[Described]:
    """Check a serialized ``ModelInferRequest`` (raw contents are sliced out, not parsed);
    return its inputs."""
    message, raws = grpc_codec.parse_raw(data, grpc_codec.RAW_INPUT_FIELD, pb.ModelInferRequest)
    if raws and len(raws) != len(message.inputs):
        raise InvalidInput(f"{len(raws)} raw contents for {len(message.inputs)} inputs")
    described: list[Described] = []
    for index, tensor in enumerate(message.inputs):
        name, shape = tensor.name, list(tensor.shape)
        datatype, count = _described(name, tensor.datatype, shape)
        has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
        if raws:
            if has_contents:
                raise InvalidInput(f"tensor {name!r} has both contents and raw contents")
            _check_raw(name, datatype, shape, count, raws[index])
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise InvalidInput(f"tensor {name!r}: {datatype} travels only as raw contents")
            got = len(getattr(tensor.contents, field))
            if got != count:
                raise _mismatch(name, got, shape, count)
        described.append((name, datatype, shape))
    return described


def against(described: Iterable[Described], declared: Mapping[str, TensorSpec]) -> None:
    """Refuse inputs the model does not declare, or declares with another datatype or a
    shape they do not fit."""
    for name, datatype, shape in described:
        spec = declared.get(name)
        if spec is None:
            names = ", ".join(repr(n) for n in declared)
            raise InvalidInput(f"tensor {name!r}: the model has no such input (it takes {names})")
        if datatype != spec.datatype:
            raise InvalidInput(
                f"tensor {name!r}: datatype {datatype}, but the model takes {spec.datatype}"
            )
        if not fits(shape, spec.shape):
            raise InvalidInput(
                f"tensor {name!r}: shape {list(shape)} does not fit the model's "
                f"{list(spec.shape)} (-1: any size)"
            )


def fits(shape: Sequence[int], declared: Sequence[int]) -> bool:
    """Whether `shape` is one of the shapes `declared` allows (-1: any size)."""
    return len(shape) == len(declared) and all(
        want in (-1, got) for got, want in zip(shape, declared, strict=True)
    )


def _described(name: str, datatype: Any, shape: Any) -> tuple[str, int]:
    """The datatype (as the decoders take it, in upper case) and the element count."""
    checked = check_datatype(datatype.upper() if isinstance(datatype, str) else datatype, name)
    return checked, arrays.element_count(shape, name)


def _check_raw(name: str, datatype: str, shape: Sequence[int], count: int, raw: Buffer) -> None:
    if datatype != "BYTES":
        expected = count * itemsize(datatype)
        if len(raw) != expected:
            raise InvalidInput(
                f"tensor {name!r}: {len(raw)} bytes of data, but shape {list(shape)} of "
                f"{datatype} needs {expected}"
            )
        return
    got = _framed_count(raw, name)
    if got != count:
        raise _mismatch(name, got, shape, count)


def _framed_count(raw: Buffer, name: str) -> int:
    """How many length-prefixed BYTES elements `raw` holds, reading only their lengths."""
    size, offset, count = memoryview(raw).nbytes, 0, 0
    unpack_from = _LENGTH.unpack_from
    while offset < size:
        if offset + 4 > size:
            raise InvalidInput(f"tensor {name!r}: BYTES element {count} is truncated in its length")
        offset += 4 + unpack_from(raw, offset)[0]
        if offset > size:
            raise InvalidInput(f"tensor {name!r}: BYTES element {count} runs past the data")
        count += 1
    return count


def _json_count(data: Any, name: str) -> int:
    """Elements in JSON ``data``: a flat list's length, or a nested list's leaves. Nested
    lists must be regular; the values themselves are left to the decoder (or the upstream),
    so only the lists, not the leaves, are visited."""
    if isinstance(data, json_skim.Skimmed):
        return data.count
    if not isinstance(data, list):
        return 1
    rows: list[list[Any]] = [data]
    while True:
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            raise InvalidInput(f"tensor {name!r}: data is not a regular array")
        if width == 0 or not isinstance(rows[0][0], list):
            return len(rows) * width
        items = [item for row in rows for item in row]
        if not all(isinstance(item, list) for item in items):
            raise InvalidInput(f"tensor {name!r}: data is not a regular array")
        rows = items


def _mismatch(name: str, got: int, shape: Sequence[int], count: int) -> InvalidInput:
    return InvalidInput(
        f"tensor {name!r}: data has {got} elements, but shape {list(shape)} needs {count}"
    )
