"""The one table of Open Inference Protocol datatypes; everything else derives from it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NamedTuple

from gateway import lazy_numpy
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

# Wire storage of each datatype, as numpy type codes: little-endian, as the binary extension
# and gRPC raw contents carry it. BF16 is stored as its 16 raw bits; BYTES as Python objects
# (length-framed on the wire). Codes rather than numpy types, so that a gateway which never
# builds an array never imports numpy (`Dtypes` holds the types).
STORAGE_CODES: dict[str, str] = {
    "BOOL": "b1",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BF16": "<u2",
    "BYTES": "O",
}

DATATYPES = frozenset(STORAGE_CODES)

# Bytes per element on the wire; 0 for BYTES, whose elements vary.
_ITEMSIZE = {name: 0 if code == "O" else int(code[-1]) for name, code in STORAGE_CODES.items()}


class Dtypes(NamedTuple):
    """The numpy types of the datatypes, made once, on first use."""

    # Wire storage (`STORAGE_CODES`).
    storage: dict[str, np.dtype[Any]]
    # What `as_numpy()` returns. BF16 has no numpy type, so it widens exactly to float32 (as
    # tritonclient does); every other type is its storage type.
    numpy: dict[str, np.dtype[Any]]
    # `numpy` in this machine's byte order (what orjson writes).
    native: dict[str, np.dtype[Any]]
    # The inverse of `storage` for arrays that arrive without a datatype, by native type
    # code. uint16 stays UINT16 (never BF16).
    datatype_of: dict[str, str]


@functools.cache
def dtypes() -> Dtypes:
    """The numpy types of every datatype (this imports numpy)."""
    storage = {name: np.dtype(code) for name, code in STORAGE_CODES.items()}
    as_numpy = {**storage, "BF16": np.dtype(np.float32)}
    native = {name: t.newbyteorder("=") for name, t in as_numpy.items()}
    datatype_of = {
        dtype.newbyteorder("=").str: name
        for name, dtype in storage.items()
        if name not in ("BF16", "BYTES")
    }
    return Dtypes(storage, as_numpy, native, datatype_of)


FIXED_SIZE = frozenset(name for name in STORAGE_CODES if name != "BYTES")
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
    if not isinstance(datatype, str) or datatype not in STORAGE_CODES:
        known = ", ".join(sorted(STORAGE_CODES))
        raise InvalidInput(f"tensor {tensor!r}: unknown datatype {datatype!r} (known: {known})")
    return datatype


def itemsize(datatype: str) -> int:
    """Bytes per element on the wire (0 for BYTES, whose elements vary)."""
    return _ITEMSIZE[datatype]


@functools.lru_cache(maxsize=64)
def from_numpy_dtype(dtype: np.dtype[Any]) -> str | None:
    """The datatype of a numpy dtype, or None when the protocol has no such type."""
    if dtype.kind in "OSU":
        return "BYTES"
    return dtypes().datatype_of.get(dtype.newbyteorder("=").str)
