"""The one table of Open Inference Protocol datatypes; everything else derives from it."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gateway.errors import InvalidInput

# Wire storage of each datatype: little-endian, as the binary extension and gRPC raw contents
# carry it. BF16 is stored as its 16 raw bits; BYTES as Python objects (length-framed on the
# wire).
STORAGE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "BYTES": np.dtype(np.object_),
}

DATATYPES = frozenset(STORAGE)

# What `as_numpy()` returns for each datatype. BF16 has no numpy type, so it widens exactly to
# float32 (as tritonclient does); every other type is its storage type.
NUMPY: dict[str, np.dtype[Any]] = {**STORAGE, "BF16": np.dtype(np.float32)}

# The inverse, for arrays that arrive without a datatype. uint16 stays UINT16 (never BF16).
_FROM_NUMPY: dict[str, str] = {
    dtype.newbyteorder("=").str: name
    for name, dtype in STORAGE.items()
    if name not in ("BF16", "BYTES")
}

# Each datatype's numpy type in this machine's byte order (what orjson writes), made once.
NATIVE: dict[str, np.dtype[Any]] = {name: t.newbyteorder("=") for name, t in NUMPY.items()}

FIXED_SIZE = frozenset(name for name in STORAGE if name != "BYTES")
FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})
INTS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})

# The `InferTensorContents` field that carries each datatype in gRPC; FP16 and BF16 have none
# and travel only as raw contents.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def check_datatype(datatype: object, tensor: str) -> str:
    """Return `datatype` if it is a known datatype, else raise naming the tensor."""
    if not isinstance(datatype, str) or datatype not in STORAGE:
        known = ", ".join(sorted(STORAGE))
        raise InvalidInput(f"tensor {tensor!r}: unknown datatype {datatype!r} (known: {known})")
    return datatype


def itemsize(datatype: str) -> int:
    """Bytes per element on the wire (0 for BYTES, whose elements vary)."""
    return 0 if datatype == "BYTES" else STORAGE[datatype].itemsize


@functools.lru_cache(maxsize=64)
def from_numpy_dtype(dtype: np.dtype[Any]) -> str | None:
    """The datatype of a numpy dtype, or None when the protocol has no such type."""
    if dtype.kind in "OSU":
        return "BYTES"
    return _FROM_NUMPY.get(dtype.newbyteorder("=").str)
