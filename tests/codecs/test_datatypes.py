"""The one table of datatypes and what derives from it (codecs.datatypes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.codecs.datatypes import (
    CONTENTS_FIELD,
    DATATYPES,
    FIXED_SIZE,
    check_datatype,
    dtypes,
    from_numpy_dtype,
    itemsize,
)
from gateway.errors import InvalidInput

Array = np.ndarray[Any, Any]


def test_datatype_table_covers_the_protocol() -> None:
    assert set(DATATYPES) == {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
    # Wire storage is little-endian (or byte-sized, where order does not apply).
    storage = dtypes().storage
    for name in FIXED_SIZE:
        assert storage[name].str[0] in "<|", name
        assert storage[name].itemsize == itemsize(name), name  # the table of sizes agrees
    assert set(DATATYPES) - set(CONTENTS_FIELD) == {"FP16", "BF16"}


@pytest.mark.parametrize(
    ("datatype", "size"),
    [
        ("BOOL", 1),
        ("UINT8", 1),
        ("INT16", 2),
        ("FP16", 2),
        ("BF16", 2),
        ("FP32", 4),
        ("UINT64", 8),
        ("FP64", 8),
        ("BYTES", 0),
    ],
)
def test_itemsize(datatype: str, size: int) -> None:
    assert itemsize(datatype) == size


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.bool_, "BOOL"),
        (np.uint8, "UINT8"),
        (np.uint16, "UINT16"),  # never BF16
        (np.uint64, "UINT64"),
        (np.int8, "INT8"),
        (np.int64, "INT64"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (np.object_, "BYTES"),
        ("S3", "BYTES"),
        ("U3", "BYTES"),
        (">i4", "INT32"),
        (">f8", "FP64"),
        (np.complex64, None),
        ("M8[s]", None),
    ],
)
def test_from_numpy_dtype(dtype: Any, datatype: str | None) -> None:
    assert from_numpy_dtype(np.dtype(dtype)) == datatype


@pytest.mark.parametrize("datatype", ["fp32", "FLOAT", "", None, 3, "STRING"])
def test_check_datatype_refuses_unknown(datatype: object) -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'the_input': unknown datatype") as info:
        check_datatype(datatype, "the_input")
    assert "FP32" in str(info.value)  # lists the known ones
