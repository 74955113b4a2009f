"""Tensor data between numpy and its wire forms: raw bytes, JSON ``data`` and typed contents.

Raw bytes become arrays with ``np.frombuffer`` (no copy); JSON lists go through numpy in one
call. Every check that could reject a tensor runs before anything of its declared size is
allocated, and every message names the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway import lazy_numpy
from gateway.codecs import bytes_tensor
from gateway.codecs.datatypes import FLOATS, INTS, dtypes, itemsize
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]
else:
    np = lazy_numpy.bind(globals())

Buffer = bytes | bytearray | memoryview

# Far above any real tensor (16 GiB of FP32), far below what would overflow a size computation.
MAX_ELEMENTS = 1 << 32
# numpy 1.x shapes at most 32 dims (numpy 2.x: 64); no model needs more.
MAX_DIMS = 32


def element_count(shape: object, tensor: str, max_elements: int = MAX_ELEMENTS) -> int:
    """Number of elements of `shape`, which must be a list of non-negative integers."""
    if not isinstance(shape, list | tuple):
        raise InvalidInput(f"tensor {tensor!r}: shape must be a list of integers, got {shape!r}")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(
            f"tensor {tensor!r}: shape has {len(shape)} dims, more than the limit of {MAX_DIMS}"
        )
    count = 1
    for dim in shape:
        if not _is_integer(dim):
            raise InvalidInput(f"tensor {tensor!r}: shape {list(shape)} has a non-integer dim")
        if dim < 0:
            raise InvalidInput(f"tensor {tensor!r}: shape {list(shape)} has a negative dim")
        if dim > max_elements:
            # Even when another dim is 0: numpy cannot shape an array with such a dim.
            raise InvalidInput(
                f"tensor {tensor!r}: shape {list(shape)} has a dim over the limit of "
                f"{max_elements} elements"
            )
        # Capped, so a long shape cannot grow a huge integer; a later 0 still gives 0.
        count = min(count * int(dim), max_elements + 1)
    if count > max_elements:
        raise InvalidInput(
            f"tensor {tensor!r}: shape {list(shape)} has more than the limit of "
            f"{max_elements} elements"
        )
    return count


def _is_integer(value: object) -> bool:
    """Whether `value` is a Python or numpy integer (asking does not import numpy)."""
    if isinstance(value, int):
        return not isinstance(value, bool)
    numpy = lazy_numpy.loaded()
    return numpy is not None and isinstance(value, numpy.integer)


def check_raw(raw: Buffer, datatype: str, shape: Sequence[int], tensor: str) -> None:
    """Check that `raw` holds exactly the tensor `shape` x `datatype` declares."""
    count = element_count(shape, tensor)
    if datatype == "BYTES":
        bytes_tensor.unframe(raw, count, tensor)
        return
    expected = count * itemsize(datatype)
    if len(raw) != expected:
        raise InvalidInput(
            f"tensor {tensor!r}: {len(raw)} bytes of data, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )


def from_raw(raw: Buffer, datatype: str, shape: Sequence[int], tensor: str) -> Array:
    """A read-only view of raw wire data (a copy only for BYTES and the BF16 widening)."""
    count = element_count(shape, tensor)
    if datatype == "BYTES":
        flat = bytes_tensor.to_object_array(bytes_tensor.unframe(raw, count, tensor))
    else:
        check_raw(raw, datatype, shape, tensor)
        flat = np.frombuffer(raw, dtype=dtypes().storage[datatype])
        if datatype == "BF16":
            flat = bf16_to_float32(flat)
    return flat.reshape(shape)


def to_raw(array: Array, datatype: str, tensor: str) -> Buffer:
    """Wire bytes of an array of `datatype`; a view of the array when it is already laid out."""
    if datatype == "BYTES":
        elements = (bytes_tensor.element_bytes(v, tensor) for v in array.ravel(order="C"))
        return bytes_tensor.frame(elements)
    if datatype == "BF16":
        array = float32_to_bf16(array)
    stored = np.ascontiguousarray(array, dtype=dtypes().storage[datatype])
    return stored.data.cast("B") if stored.size else b""


def coerce(array: Array, datatype: str, tensor: str) -> Array:
    """Check that a caller's array can be `datatype` without changing its values.

    BF16 is the exception: float arrays are rounded to what BF16 holds, as sending them does.
    """
    if datatype == "BF16":
        if array.dtype.name == "bfloat16":  # ml_dtypes
            return bf16_to_float32(array.view(np.uint16))
        if array.dtype.kind in "fiu":
            return bf16_to_float32(float32_to_bf16(array))
    elif array.dtype == dtypes().numpy[datatype]:
        return array
    kind = array.dtype.kind
    if datatype == "BYTES":
        ok = kind in "OSU"
    elif datatype == "BOOL":
        ok = kind == "b"
    elif datatype in INTS:
        ok = kind in "iu" and _fits_int(array, datatype)
    else:
        ok = kind in "fiu"
    if not ok:
        raise InvalidInput(f"tensor {tensor!r}: a {array.dtype} array cannot be {datatype}")
    return array


def from_json(data: object, datatype: str, shape: Sequence[int], tensor: str) -> Array:
    """Decode JSON ``data`` (flat or nested, row-major) into an array of `shape`."""
    count = element_count(shape, tensor)
    if datatype == "BYTES":
        elements = _flatten_text(data, tensor)
        if len(elements) != count:
            raise _count_mismatch(tensor, len(elements), shape, count)
        return bytes_tensor.to_object_array(elements).reshape(shape)
    try:
        parsed = np.asarray(data)
    except ValueError as exc:
        raise InvalidInput(f"tensor {tensor!r}: data is not a regular array: {exc}") from exc
    if parsed.size != count:
        raise _count_mismatch(tensor, parsed.size, shape, count)
    if count == 0:
        try:
            return np.zeros(shape, dtype=dtypes().numpy[datatype])
        except ValueError as exc:  # empty, but its other dims multiply past numpy's reach
            raise InvalidInput(f"tensor {tensor!r}: numpy cannot shape {list(shape)}") from exc
    kind = parsed.dtype.kind
    if datatype == "UINT64" and kind in "fO":
        parsed = _exact_uint64(data, tensor)
        kind = parsed.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidInput(f"tensor {tensor!r}: BOOL data must be true/false")
    elif datatype in INTS:
        if kind not in "iu":
            raise InvalidInput(f"tensor {tensor!r}: {datatype} data must be integers")
        if not _fits_int(parsed, datatype):
            raise InvalidInput(f"tensor {tensor!r}: data out of range for {datatype}")
    elif kind not in "fiu":
        raise InvalidInput(f"tensor {tensor!r}: {datatype} data must be numbers")
    # Overflow is refused below, naming the tensor; numpy's warning would only be noise.
    with np.errstate(over="ignore"):
        converted = parsed.astype(dtypes().numpy[datatype] if datatype != "BF16" else np.float32)
    if datatype == "BF16":
        # Before the overflow check: values near float32's max round up to infinity.
        converted = bf16_to_float32(float32_to_bf16(converted))
    if datatype in FLOATS and datatype != "FP64":
        _check_no_overflow(parsed, converted, datatype, tensor)
    return converted.reshape(shape)


def to_json(array: Array, datatype: str, tensor: str) -> Array | list[str]:
    """Flat JSON-ready data: a C-contiguous native array (orjson writes it), or text for BYTES."""
    flat = array.ravel(order="C")
    if datatype == "BYTES":
        try:
            return [bytes_tensor.element_bytes(v, tensor).decode() for v in flat]
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"tensor {tensor!r}: BYTES element is not UTF-8 text, which JSON cannot carry; "
                "send or ask for it as binary data"
            ) from exc
    out = np.ascontiguousarray(flat, dtype=dtypes().native[datatype])
    # logical_and.reduce rather than .all(): on small tensors the method's wrapper costs more
    # than the check.
    if datatype in FLOATS and not np.logical_and.reduce(np.isfinite(out), axis=None):
        raise InvalidInput(
            f"tensor {tensor!r}: holds NaN or infinity, which JSON cannot carry; "
            "send or ask for it as binary data"
        )
    return out


def bf16_to_float32(bits: Array) -> Array:
    """Widen BF16 bit patterns (uint16) to float32; exact."""
    return (bits.astype("<u4") << 16).view("<f4")


def float32_to_bf16(values: Array) -> Array:
    """Round float32 values to the nearest BF16 (ties to even) as uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded: Array = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    nan = np.isnan(values)
    if nan.any():
        # Rounding could carry a NaN's payload into the exponent and make it infinite.
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype("<u2")
    return rounded


def _exact_uint64(data: object, tensor: str) -> Array:
    """UINT64 data that numpy read inexactly, read again exactly.

    numpy reads ints above int64's max mixed with smaller ones as float64, losing digits. Only
    such data (or data that is not integers at all) comes here, so a loop is affordable.
    """
    values = np.array(data, dtype=np.object_)
    flat = values.ravel().tolist()
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in flat):
        raise InvalidInput(f"tensor {tensor!r}: UINT64 data must be integers")
    if min(flat) < 0 or max(flat) > np.iinfo(np.uint64).max:
        raise InvalidInput(f"tensor {tensor!r}: data out of range for UINT64")
    return np.array(flat, dtype=np.uint64).reshape(values.shape)


def _fits_int(array: Array, datatype: str) -> bool:
    if array.size == 0:
        return True
    info = np.iinfo(dtypes().storage[datatype])
    return int(array.min()) >= info.min and int(array.max()) <= info.max


def _check_no_overflow(source: Array, converted: Array, datatype: str, tensor: str) -> None:
    infinite = np.isinf(converted)
    if not infinite.any():  # the common case: nothing to compare
        return
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = infinite & ~np.isinf(source.astype(np.float64, copy=False))
    if overflow.any():
        raise InvalidInput(f"tensor {tensor!r}: data out of range for {datatype}")


def _flatten_text(data: object, tensor: str) -> list[bytes]:
    # JSON gives str; a caller's list may also hold bytes.
    items: list[Any] = data if isinstance(data, list) else [data]
    if all(type(item) is str for item in items):  # flat JSON text: the common case, fast
        return [item.encode() for item in items]
    out: list[bytes] = []
    stack: list[Any] = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(bytes_tensor.element_bytes(item, tensor))
        else:
            stack.pop()
    return out


def _count_mismatch(tensor: str, got: int, shape: Sequence[int], count: int) -> InvalidInput:
    return InvalidInput(
        f"tensor {tensor!r}: data has {got} elements, but shape {list(shape)} needs {count}"
    )
