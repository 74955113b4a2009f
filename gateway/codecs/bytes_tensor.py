"""BYTES tensors on the wire: each element is a 4-byte little-endian length, then its bytes."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway import lazy_numpy
from gateway.errors import InferenceError, InvalidInput

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

Buffer = bytes | bytearray | memoryview

# An element's length on the wire.
_LENGTH = struct.Struct("<I")


def element_bytes(value: object, tensor: str) -> bytes:
    """One BYTES element as bytes: bytes as they are, text as UTF-8, nothing else."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(
        f"tensor {tensor!r}: BYTES elements must be bytes or str, got {type(value).__name__}"
    )


def frame(elements: Iterable[bytes]) -> bytes:
    """Length-prefix and concatenate `elements` (already bytes)."""
    # Grown piece by piece: one `b"".join` of a million parts would hold the interpreter
    # (and so the event loop) for a fifth of a second, and is slower besides.
    out = bytearray()
    for element in elements:
        out += _LENGTH.pack(len(element))
        out += element
    return bytes(out)


def unframe(buffer: Buffer, count: int | None = None, tensor: str = "") -> list[bytes]:
    """Split framed elements; with `count`, the buffer must hold exactly that many."""
    # Sliced from bytes (one copy when given a view): one object per element, not two.
    data = buffer if type(buffer) is bytes else bytes(buffer)
    size = len(data)
    elements: list[bytes] = []
    append = elements.append
    offset = 0
    while offset < size:
        if count is not None and len(elements) == count:
            raise InvalidInput(
                f"tensor {tensor!r}: {size - offset} bytes left after its {count} BYTES elements"
            )
        if offset + 4 > size:
            raise InvalidInput(
                f"tensor {tensor!r}: BYTES element {len(elements)} is truncated in its length"
            )
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        end = offset + length
        if end > size:
            raise InvalidInput(
                f"tensor {tensor!r}: BYTES element {len(elements)} declares {length} bytes "
                f"but only {size - offset} remain"
            )
        append(data[offset:end])
        offset = end
    if count is not None and len(elements) != count:
        raise InvalidInput(
            f"tensor {tensor!r}: holds {len(elements)} BYTES elements, its shape needs {count}"
        )
    return elements


def serialize_byte_tensor(input_tensor: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Serialize a BYTES tensor (object, bytes_ or str_ array) in row-major order.

    Returns a 1-D uint8 array of the framed bytes. Use an object array for bytes that may end
    in NUL: numpy's fixed-width ``bytes_`` drops trailing zeros.
    """
    if input_tensor.dtype.kind not in "OSU":
        raise InferenceError(f"cannot serialize a {input_tensor.dtype} array as BYTES")
    try:
        framed = frame(element_bytes(value, "") for value in input_tensor.ravel(order="C"))
    except InvalidInput as exc:
        raise InferenceError(f"cannot serialize BYTES tensor: {exc}") from exc
    return np.frombuffer(framed, dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor: Buffer) -> np.ndarray[Any, Any]:
    """Split a framed BYTES buffer into a 1-D object array of bytes."""
    return to_object_array(unframe(encoded_tensor))


def to_object_array(elements: list[bytes]) -> np.ndarray[Any, Any]:
    return np.array(elements, dtype=np.object_)
