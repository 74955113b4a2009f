"""What the REST and gRPC codecs read of one tensor, as plain values."""

from __future__ import annotations

from typing import Any, NamedTuple

Buffer = bytes | bytearray | memoryview


class TensorFields(NamedTuple):
    """One tensor of a message, its structure checked: its raw bytes, or its data (JSON
    ``data`` or gRPC typed contents' values). Shape, datatype and data are checked by whoever
    builds the tensor from it."""

    name: str
    shape: Any
    datatype: Any
    parameters: dict[str, Any] | None
    raw: Buffer | None
    data: Any
