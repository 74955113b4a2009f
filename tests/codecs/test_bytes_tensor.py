"""BYTES framing (codecs.bytes_tensor): ours, KServe's names for it, and tritonclient's."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient import utils as triton_utils

from gateway import InferenceError, InvalidInput, deserialize_bytes_tensor, serialize_byte_tensor
from gateway.codecs import bytes_tensor

elements = st.lists(st.binary(max_size=40), max_size=12)


def _framed(items: list[bytes]) -> bytes:
    """The framing written out by hand, independently of the code under test."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _object_array(items: list[Any]) -> np.ndarray[Any, Any]:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@settings(max_examples=150, deadline=None)
@given(elements)
def test_frame_and_unframe_are_inverse(items: list[bytes]) -> None:
    framed = bytes_tensor.frame(items)
    assert framed == _framed(items)
    assert bytes_tensor.unframe(framed) == items
    assert bytes_tensor.unframe(framed, len(items), "t") == items
    assert bytes_tensor.unframe(bytearray(framed)) == items
    assert bytes_tensor.unframe(memoryview(framed)) == items


def test_unframe_reads_a_buffer_of_any_format() -> None:
    words = np.frombuffer(_framed([b"abc", b"d"]), dtype="<u4")  # 12 bytes, 3 words
    assert memoryview(words).format != "B"
    assert bytes_tensor.unframe(memoryview(words)) == [b"abc", b"d"]


@pytest.mark.parametrize(
    ("buffer", "count", "problem"),
    [
        (b"\x01\x00\x00", None, "element 0 is truncated in its length"),
        (b"\x02\x00\x00\x00a", None, "element 0 declares 2 bytes but only 1 remain"),
        (_framed([b"ok"]) + b"\x05\x00", None, "element 1 is truncated in its length"),
        (_framed([b"ok"]) + b"\xff\xff\xff\xff", None, "declares 4294967295 bytes"),
        (_framed([b"a", b"b"]), 1, "5 bytes left after its 1 BYTES elements"),
        (_framed([b"a"]), 2, "holds 1 BYTES elements, its shape needs 2"),
        (b"", 1, "holds 0 BYTES elements, its shape needs 1"),
        (b"\x00", 0, "1 bytes left after its 0 BYTES elements"),
    ],
)
def test_unframe_refuses(buffer: bytes, count: int | None, problem: str) -> None:
    with pytest.raises(InvalidInput, match=r"^tensor 'names': ") as info:
        bytes_tensor.unframe(buffer, count, "names")
    assert problem in str(info.value)


def test_unframe_does_not_trust_a_declared_length() -> None:
    # A 4 GiB claim over a few bytes is refused from the lengths alone.
    with pytest.raises(InvalidInput, match="only 3 remain"):
        bytes_tensor.unframe(b"\xff\xff\xff\xffabc", 1, "t")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00raw\xff", b"\x00raw\xff"),
        ("", b""),
        ("日本", "日本".encode()),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"cd"), b"cd"),
        (np.bytes_(b"ef"), b"ef"),
        (np.str_("gh"), b"gh"),
    ],
)
def test_element_bytes(value: object, expected: bytes) -> None:
    out = bytes_tensor.element_bytes(value, "t")
    assert isinstance(out, bytes)
    assert out == expected


@pytest.mark.parametrize("value", [1, 1.5, None, True, ["a"]])
def test_element_bytes_refuses_other_types(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"tensor 'x': BYTES elements must be bytes or str"):
        bytes_tensor.element_bytes(value, "x")


# --- KServe's functions ---------------------------------------------------------------------


def test_serialize_byte_tensor_is_row_major_uint8() -> None:
    array = np.array([[b"a", b"bc"], [b"", b"d"]], dtype=object)
    for layout in (array, np.asfortranarray(array), array.T.T):
        out = serialize_byte_tensor(layout)
        assert out.dtype == np.uint8
        assert out.ndim == 1
        assert out.tobytes() == _framed([b"a", b"bc", b"", b"d"])


@pytest.mark.parametrize(
    ("array", "items"),
    [
        (_object_array([b"end\x00", "é", b""]), [b"end\x00", "é".encode(), b""]),
        (np.array([b"ab", b"c"], dtype="S"), [b"ab", b"c"]),
        (np.array(["ab", "ü"], dtype="U"), [b"ab", "ü".encode()]),
        (np.array([], dtype=object), []),
        (np.array(b"scalar", dtype=object), [b"scalar"]),
    ],
)
def test_serialize_byte_tensor(array: np.ndarray[Any, Any], items: list[bytes]) -> None:
    assert serialize_byte_tensor(array).tobytes() == _framed(items)


def test_serialize_byte_tensor_refuses_what_is_not_bytes() -> None:
    with pytest.raises(InferenceError, match="cannot serialize a int64 array"):
        serialize_byte_tensor(np.array([1, 2], dtype=np.int64))
    with pytest.raises(InferenceError, match="BYTES elements must be bytes or str, got int"):
        serialize_byte_tensor(_object_array([b"a", 3]))


@settings(max_examples=100, deadline=None)
@given(elements)
def test_deserialize_bytes_tensor_inverts_serialize(items: list[bytes]) -> None:
    out = deserialize_bytes_tensor(serialize_byte_tensor(_object_array(items)).tobytes())
    assert out.dtype == object
    assert out.shape == (len(items),)
    assert out.tolist() == items


def test_deserialize_bytes_tensor_refuses_truncated_data() -> None:
    with pytest.raises(InvalidInput, match="truncated"):
        deserialize_bytes_tensor(b"\x03\x00")
    with pytest.raises(InvalidInput, match="declares 3 bytes"):
        deserialize_bytes_tensor(b"\x03\x00\x00\x00ab")


# --- tritonclient agrees --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.text(max_size=20), min_size=1, max_size=12))
def test_tritonclient_framing_agrees(items: list[bytes | str]) -> None:
    array = _object_array(items)
    ours = serialize_byte_tensor(array).tobytes()
    theirs = triton_utils.serialize_byte_tensor(array).item()
    assert ours == theirs
    as_bytes = [item.encode() if isinstance(item, str) else item for item in items]
    assert triton_utils.deserialize_bytes_tensor(ours).tolist() == as_bytes
    assert deserialize_bytes_tensor(theirs).tolist() == as_bytes


def test_tritonclient_agrees_on_nothing() -> None:
    empty = np.array([], dtype=object)
    assert triton_utils.serialize_byte_tensor(empty).size == 0
    assert serialize_byte_tensor(empty).size == 0
    assert deserialize_bytes_tensor(b"").tolist() == []
    assert triton_utils.deserialize_bytes_tensor(b"").tolist() == []
