"""Tensor data between numpy and raw bytes, JSON ``data`` and caller arrays (codecs.arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import arrays
from gateway.codecs.datatypes import (
    DATATYPES,
    dtypes,
    itemsize,
)
from gateway.errors import InvalidInput

Array = np.ndarray[Any, Any]


# --- element_count --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        ([], 1),
        ([0], 0),
        ([3], 3),
        ([2, 3, 4], 24),
        ((2, 5), 10),
        ([np.int64(4), 2], 8),
        ([0, 1 << 32], 0),
        ([1 << 32], 1 << 32),
        ([1] * arrays.MAX_DIMS, 1),
    ],
)
def test_element_count(shape: Any, count: int) -> None:
    assert arrays.element_count(shape, "t") == count


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ("2,3", "must be a list"),
        (None, "must be a list"),
        (3, "must be a list"),
        ([2.0], "non-integer dim"),
        ([True, 2], "non-integer dim"),
        (["2"], "non-integer dim"),
        ([2, -1], "negative dim"),
        ([1 << 40], "limit"),
        ([1 << 31, 1 << 31], "limit"),
        ([0, 1 << 62], "limit"),  # numpy cannot shape it even though it holds nothing
        ([1 << 33, 0], "limit"),
        ([1] * (arrays.MAX_DIMS + 1), "dims"),
        ([1 << 32] * 10_000, "dims"),
    ],
)
def test_element_count_refuses(shape: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match="tensor 'img'") as info:
        arrays.element_count(shape, "img")
    assert problem in str(info.value)


def test_element_count_product_is_capped_but_exact_below_the_limit() -> None:
    # 2**32 elements in many factors: allowed; one more factor of 2: refused.
    assert arrays.element_count([2] * 32, "t") == 1 << 32
    with pytest.raises(InvalidInput, match="more than the limit"):
        arrays.element_count([2] * 31 + [4], "t")
    # A zero anywhere wins, even after the product passed the limit.
    assert arrays.element_count([1 << 32] * 31 + [0], "t") == 0
    assert arrays.element_count([5, 5], "t", max_elements=25) == 25
    with pytest.raises(InvalidInput):
        arrays.element_count([5, 6], "t", max_elements=25)


# --- raw bytes ------------------------------------------------------------------------------


def test_from_raw_is_a_read_only_view() -> None:
    body = np.arange(6, dtype="<i4").tobytes()
    array = arrays.from_raw(body, "INT32", [2, 3], "t")
    assert array.shape == (2, 3)
    assert array.dtype == np.int32
    assert np.shares_memory(array, np.frombuffer(body, np.uint8))
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0, 0] = 1


def test_from_raw_of_a_memoryview_slice_keeps_pointing_into_the_buffer() -> None:
    buffer = bytearray(b"xx" + np.array([1.5, -2.0], "<f4").tobytes() + b"yy")
    view = memoryview(buffer)[2:10]
    array = arrays.from_raw(view, "FP32", [2], "t")
    np.testing.assert_array_equal(array, [1.5, -2.0])
    assert np.shares_memory(array, np.frombuffer(buffer, np.uint8))


def test_from_raw_bf16_widens_exactly() -> None:
    bits = np.array([0x3FC0, 0xC000, 0x7F80, 0x0001], "<u2")  # 1.5, -2, inf, tiny subnormal
    array = arrays.from_raw(bits.tobytes(), "BF16", [4], "t")
    assert array.dtype == np.float32
    assert (array.view("<u4") >> 16).astype("<u2").tolist() == bits.tolist()
    assert (array.view("<u4") & 0xFFFF).tolist() == [0, 0, 0, 0]


def test_from_raw_bytes_and_bool() -> None:
    framed = b"\x01\x00\x00\x00a\x00\x00\x00\x00\x02\x00\x00\x00\xff\x00"
    np.testing.assert_array_equal(
        arrays.from_raw(framed, "BYTES", [3, 1], "t"),
        np.array([[b"a"], [b""], [b"\xff\x00"]], dtype=object),
    )
    flags = arrays.from_raw(b"\x01\x00\x01", "BOOL", [3], "t")
    assert flags.dtype == np.bool_
    assert flags.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("raw", "datatype", "shape"),
    [
        (b"\x00" * 7, "FP32", [2]),
        (b"\x00" * 9, "FP32", [2]),
        (b"", "INT8", [1]),
        (b"\x00" * 2, "INT8", []),
        (b"\x00", "FP16", [0]),
    ],
)
def test_check_raw_refuses_a_wrong_size(raw: bytes, datatype: str, shape: list[int]) -> None:
    expected = itemsize(datatype) * (shape[0] if shape else 1)
    with pytest.raises(InvalidInput, match=rf"tensor 'w': {len(raw)} bytes of data, but shape"):
        arrays.check_raw(raw, datatype, shape, "w")
    with pytest.raises(InvalidInput, match=rf"of {datatype} needs {expected}$"):
        arrays.check_raw(raw, datatype, shape, "w")


def test_check_raw_checks_the_shape_before_the_bytes() -> None:
    with pytest.raises(InvalidInput, match="limit"):
        arrays.check_raw(b"", "FP64", [1 << 40], "t")


def test_to_raw_is_a_view_of_a_laid_out_array() -> None:
    array = np.arange(6, dtype="<f8").reshape(2, 3)
    raw = arrays.to_raw(array, "FP64", "t")
    assert np.shares_memory(np.frombuffer(raw, np.uint8), array)
    assert bytes(raw) == array.tobytes()


@pytest.mark.parametrize(
    ("array", "datatype", "expected"),
    [
        (np.array([1, 256], ">i4"), "INT32", b"\x01\x00\x00\x00\x00\x01\x00\x00"),
        (np.arange(4, dtype="<u2").reshape(2, 2).T, "UINT16", b"\x00\x00\x02\x00\x01\x00\x03\x00"),
        (np.array(7, "<i2"), "INT16", b"\x07\x00"),
        (np.zeros((0, 3), "<f4"), "FP32", b""),
        (np.array([True, False]), "BOOL", b"\x01\x00"),
        (np.array([1.5, -2.0], "<f4"), "BF16", b"\xc0\x3f\x00\xc0"),
        (np.array([[b"ab"], [b""]], dtype=object), "BYTES", b"\x02\x00\x00\x00ab\x00\x00\x00\x00"),
        (np.array(["é"], dtype="U"), "BYTES", b"\x02\x00\x00\x00\xc3\xa9"),
    ],
)
def test_to_raw(array: Array, datatype: str, expected: bytes) -> None:
    assert bytes(arrays.to_raw(array, datatype, "t")) == expected


# --- coerce ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.array([1, 2], np.int64), "INT8"),  # values fit
        (np.array([1, 2], np.uint8), "INT64"),
        (np.array([1, 2], np.int32), "FP32"),
        (np.array([1.5], np.float64), "FP16"),
        (np.array([b"x"]), "BYTES"),
        (np.array(["x"]), "BYTES"),
        (np.array([True]), "BOOL"),
        (np.array([], np.int64), "UINT8"),
    ],
)
def test_coerce_accepts_arrays_that_keep_their_values(array: Array, datatype: str) -> None:
    assert arrays.coerce(array, datatype, "t") is array


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.array([300], np.int64), "INT8"),
        (np.array([-1], np.int64), "UINT32"),
        (np.array([1.0]), "INT32"),
        (np.array([1]), "BOOL"),
        (np.array([True]), "INT8"),
        (np.array([True]), "FP32"),
        (np.array([1.0]), "BYTES"),
        (np.array(["1"]), "FP32"),
        (np.array([1 + 2j]), "FP64"),
    ],
)
def test_coerce_refuses_arrays_that_would_change(array: Array, datatype: str) -> None:
    with pytest.raises(InvalidInput, match=rf"tensor 'c': a {array.dtype} array cannot be"):
        arrays.coerce(array, datatype, "c")


def test_coerce_rounds_floats_to_bf16() -> None:
    rounded = arrays.coerce(np.array([1.0 + 2.0**-9, 3.0], np.float64), "BF16", "t")
    assert rounded.dtype == np.float32
    assert rounded.tolist() == [1.0, 3.0]


# --- JSON data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "expected"),
    [
        ([1, 2, 3, 4], "INT8", [2, 2], [[1, 2], [3, 4]]),
        ([[1, 2], [3, 4]], "INT8", [2, 2], [[1, 2], [3, 4]]),  # nested, row-major
        ([[1, 2], [3, 4]], "INT8", [4], [1, 2, 3, 4]),
        ([-128, 127], "INT8", [2], [-128, 127]),
        ([0, 255], "UINT8", [2], [0, 255]),
        ([2**64 - 1], "UINT64", [1], [2**64 - 1]),
        ([-(2**63), 2**63 - 1], "INT64", [2], [-(2**63), 2**63 - 1]),
        ([True, False], "BOOL", [2], [True, False]),
        ([1, 2.5], "FP32", [2], [1.0, 2.5]),  # ints are fine as floats
        ([65504.0], "FP16", [1], [65504.0]),
        ([7], "INT32", [], 7),
        (7, "INT32", [], 7),
        (["a", "é"], "BYTES", [2], [b"a", "é".encode()]),
        ([["a"], ["b"]], "BYTES", [2, 1], [[b"a"], [b"b"]]),
        ("solo", "BYTES", [], b"solo"),
        ([], "FP64", [0, 4], np.zeros((0, 4)).tolist()),
        ([], "BYTES", [0], []),
    ],
)
def test_from_json(data: object, datatype: str, shape: list[int], expected: object) -> None:
    array = arrays.from_json(data, datatype, shape, "t")
    assert array.shape == tuple(shape)
    assert array.dtype == dtypes().numpy[datatype]
    assert array.tolist() == expected


@pytest.mark.parametrize(
    "data", [[2**63, 0], [0, 2**64 - 1], [[2**64 - 1], [1]], [2**63, np.uint64(5)]]
)
def test_from_json_uint64_above_int64_mixed_with_small_values(data: list[Any]) -> None:
    # numpy alone reads such lists as float64, which would lose the low digits.
    array = arrays.from_json(data, "UINT64", [2], "t")
    assert array.dtype == np.uint64
    assert array.ravel().tolist() == [int(v) for v in np.array(data, dtype=object).ravel()]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([2**63, 1.0], "UINT64 data must be integers"),
        ([2**63, None], "UINT64 data must be integers"),
        ([2**63, "1"], "UINT64 data must be integers"),
        ([2**63, -1], "data out of range for UINT64"),
        ([2**64, 1], "data out of range for UINT64"),
    ],
)
def test_from_json_uint64_refuses_what_is_not_uint64(data: list[Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=rf"tensor 'u': {problem}"):
        arrays.from_json(data, "UINT64", [2], "u")


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_from_json_of_nothing_has_the_right_dtype(datatype: str) -> None:
    array = arrays.from_json([], datatype, [2, 0], "t")
    assert array.shape == (2, 0)
    assert array.dtype == dtypes().numpy[datatype]


def test_from_json_bf16_rounds_to_nearest_bf16() -> None:
    array = arrays.from_json([1.0 + 2.0**-9, 1.0 + 3 * 2.0**-9], "BF16", [2], "t")
    assert array.dtype == np.float32
    assert array.tolist() == [1.0, 1.0 + 2.0**-7]


@pytest.mark.parametrize(
    ("data", "datatype", "problem"),
    [
        ([300], "INT8", "out of range for INT8"),
        ([-1], "UINT8", "out of range for UINT8"),
        ([2**63], "INT64", "out of range for INT64"),
        ([1.5], "INT32", "must be integers"),
        ([1.0], "INT32", "must be integers"),
        ([True], "INT32", "must be integers"),
        (["1"], "INT32", "must be integers"),
        ([1, 0], "BOOL", "true/false"),
        ([True, 0], "BOOL", "true/false"),
        ([True], "FP32", "must be numbers"),
        ([None], "FP32", "must be numbers"),
        ([{"a": 1}], "FP64", "must be numbers"),
        ([1e300], "FP32", "out of range for FP32"),
        ([-1e300], "FP32", "out of range for FP32"),
        ([65520.0], "FP16", "out of range for FP16"),
        ([3.4028235e38], "BF16", "out of range for BF16"),  # rounds up to infinity
        ([[1, 2], [3]], "INT8", "not a regular array"),
        ([1], "BYTES", "bytes or str"),
        ([None], "BYTES", "bytes or str"),
    ],
)
def test_from_json_refuses(data: object, datatype: str, problem: str) -> None:
    shape = [3] if datatype == "INT8" and "regular" in problem else [len(data)]
    with pytest.raises(InvalidInput, match=r"tensor 'j'") as info:
        arrays.from_json(data, datatype, shape, "j")
    assert problem in str(info.value)


def test_from_json_checks_the_count_before_building() -> None:
    with pytest.raises(InvalidInput, match=r"data has 1 elements, but shape \[1073741824\]"):
        arrays.from_json([1], "FP64", [1 << 30], "t")
    with pytest.raises(InvalidInput, match=r"data has 2 elements, but shape \[3\] needs 3"):
        arrays.from_json(["a", "b"], "BYTES", [3], "t")


def test_to_json_gives_native_contiguous_arrays() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3).T
    out = arrays.to_json(array, "INT32", "t")
    assert isinstance(out, np.ndarray)
    assert out.dtype.isnative
    assert out.flags.c_contiguous
    assert out.tolist() == [0, 3, 1, 4, 2, 5]


def test_to_json_bytes_is_text() -> None:
    array = np.array([[b"a", "é".encode()], [b"", b"z"]], dtype=object)
    assert arrays.to_json(array, "BYTES", "t") == ["a", "é", "", "z"]


def test_to_json_refuses_non_utf8_and_non_finite() -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'bin': BYTES element is not UTF-8"):
        arrays.to_json(np.array([b"\xff"], dtype=object), "BYTES", "bin")
    for value in (np.nan, np.inf, -np.inf):
        with pytest.raises(InvalidInput, match=r"tensor 'f': holds NaN or infinity"):
            arrays.to_json(np.array([1.0, value], np.float32), "FP32", "f")


# --- BF16 rounding --------------------------------------------------------------------------


def _bf16_nearest_even(bits: int) -> int:
    """BF16 bits nearest to the float32 `bits`, ties to even (finite and infinite inputs)."""
    high, low = bits >> 16, bits & 0xFFFF
    if low > 0x8000 or (low == 0x8000 and high & 1):
        high += 1
    return high


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_float32_to_bf16_rounds_to_nearest_even(patterns: list[int]) -> None:
    values = np.array(patterns, "<u4").view("<f4")
    got = arrays.float32_to_bf16(values)
    for bits, value, rounded in zip(patterns, values, got.tolist(), strict=True):
        if np.isnan(value):
            # NaN stays NaN (and keeps its sign), even when its payload is in the low bits only.
            assert rounded & 0x7F80 == 0x7F80
            assert rounded & 0x7F
            assert rounded >> 15 == bits >> 31
        else:
            assert rounded == _bf16_nearest_even(bits)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), max_size=20))
def test_bf16_values_survive_widening_and_narrowing(patterns: list[int]) -> None:
    bits = np.array(patterns, "<u2")
    widened = arrays.bf16_to_float32(bits)
    back = arrays.float32_to_bf16(widened)
    finite = ~np.isnan(widened)
    assert back[finite].tolist() == bits[finite].tolist()
    assert np.isnan(arrays.bf16_to_float32(back)[~finite]).all()


def test_float32_nan_with_payload_only_in_low_bits_stays_nan() -> None:
    nan = np.array([0x7F800001, 0xFF800001], "<u4").view("<f4")
    assert np.isnan(nan).all()
    widened = arrays.bf16_to_float32(arrays.float32_to_bf16(nan))
    assert np.isnan(widened).all()
    assert np.signbit(widened).tolist() == [False, True]
