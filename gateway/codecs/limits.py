"""How much of a request may become Python objects when it is decoded.

Raw tensor data (the binary extension, gRPC raw contents) is decoded without a copy and without
holding the interpreter: numpy reads it in bulk. What is decoded value by value holds the
interpreter for as long as it takes, and only a count bounds that: JSON (parsed by orjson in
one call), gRPC messages apart from their raw contents (parsed by protobuf in one call), BYTES
elements, typed gRPC contents. `DecodeLimits` bounds each, so that no request holds the
server's event loop for long, however it is built; the counts that can be known before
parsing are checked before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import lazy_numpy
from gateway.codecs import json_depth
from gateway.errors import PayloadTooLarge

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

__all__ = ["DecodeLimits", "ValueBudget"]

Buffer = bytes | bytearray | memoryview

MIB = 1 << 20
_COMMA, _COLON, _BRACKET, _BRACE = b",", b":", b"[", b"{"


@dataclass(frozen=True)
class DecodeLimits:
    """What one request may hold, besides its size in bytes. The defaults keep the decoding
    of the largest request each allows to about 0.1 s of interpreter time (see
    ``docs/reliability.md``)."""

    # Bytes of JSON text: a REST body, or the JSON part of a binary-extension body.
    json_bytes: int = 16 * MIB
    # Values decoded one by one: JSON array elements and object members, BYTES elements,
    # gRPC typed-contents values.
    values: int = 1_000_000
    # JSON object members (the costliest values to parse, and a v1 column each).
    keys: int = 100_000
    # Bytes of a gRPC request that protobuf parses: all but its raw tensor contents.
    grpc_parsed_bytes: int = 8 * MIB

    def check_json(self, text: Buffer, what: str = "the request's JSON") -> None:
        """Refuse JSON `text` that holds more than the limits allow, before it is parsed."""
        size = len(text)
        if size > self.json_bytes:
            raise PayloadTooLarge(
                f"{what} has {size} bytes; the limit is {self.json_bytes} (send large tensors "
                "as binary data)"
            )
        # A value takes at least 1 byte and a separator, a member at least 4 bytes ("":0):
        # short text cannot be over the limits, and is not scanned.
        if size // 2 < self.values and size // 5 < self.keys:
            return
        chars = json_depth.structure(text, b",:[{")
        counts = np.bincount(chars, minlength=128) if chars.size else np.zeros(128, np.int64)
        keys = int(counts[_COLON[0]])
        if keys > self.keys:
            raise PayloadTooLarge(f"{what} has {keys} object members; the limit is {self.keys}")
        # Each element or member after the first of its container follows a comma.
        values = int(counts[_COMMA[0]] + counts[_BRACKET[0]] + counts[_BRACE[0]])
        if values > self.values:
            raise PayloadTooLarge(f"{what} has {values} values; the limit is {self.values}")

    def check_grpc(self, parsed_bytes: int) -> None:
        """Refuse a gRPC request whose parts for protobuf are larger than the limit."""
        if parsed_bytes > self.grpc_parsed_bytes:
            raise PayloadTooLarge(
                f"the message has {parsed_bytes} bytes besides its raw contents; the limit is "
                f"{self.grpc_parsed_bytes} (send large tensors as raw_input_contents)"
            )

    def budget(self) -> ValueBudget:
        """The count of values one request may still decode."""
        return ValueBudget(self.values)


class ValueBudget:
    """Values a request's decoder may still turn into Python objects (BYTES elements, typed
    gRPC contents), taken before each tensor is decoded."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, count: int, tensor: Any) -> None:
        self.left -= count
        if self.left < 0:
            raise PayloadTooLarge(
                f"tensor {tensor!r}: the request holds more than {self.limit} values decoded "
                "one by one (BYTES elements, typed contents, JSON values)"
            )
