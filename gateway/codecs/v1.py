"""The mapping between v1 (``instances`` / ``predictions``) and v2 tensors.

v1 has no tensors, names or datatypes, so the mapping is defined for regular arrays only:

- one tensor <-> ``instances`` / ``predictions`` holding that array (row-major, nested);
- several tensors with the same first dimension <-> a list of row objects, one key per
  tensor (``[{"age": 31, "income": 52000.0}, ...]``), the usual v1 tabular form;
- a v1 array becomes an input called ``input-0``; its datatype comes from its values (float
  -> FP64, int -> INT64, or UINT64 above INT64's range, bool -> BOOL, str -> BYTES).

Anything else (ragged arrays, non-UTF-8 BYTES, mixed rows, strings mixed with other values)
is refused with a message naming what does not map. Bools mixed with numbers are numbers, as
numpy (and so a v1 predictor) reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gateway import lazy_numpy
from gateway.codecs.datatypes import from_numpy_dtype
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]
else:
    np = lazy_numpy.bind(globals())

V1_INPUT_NAME = "input-0"


class Column(NamedTuple):
    """One tensor's side of the mapping: its name, datatype and values (shaped)."""

    name: str
    datatype: str
    array: Array


def to_v1(columns: Sequence[Column], what: str) -> Any:
    """The v1 value (``instances`` or ``predictions``) for some tensors' columns."""
    if len(columns) == 1:
        return _plain(columns[0])
    if not columns:
        return []
    rows = {column.array.shape[0] if column.array.ndim else None for column in columns}
    if len(rows) != 1 or None in rows:
        names = ", ".join(column.name for column in columns)
        raise InvalidInput(
            f"{what}: tensors {names} do not share a first dimension, so they have no v1 form"
        )
    values = {column.name: _plain(column) for column in columns}
    count = rows.pop() or 0
    return [{name: column[row] for name, column in values.items()} for row in range(count)]


def from_v1(value: Any, what: str) -> list[Column]:
    """The tensors' columns for a v1 ``instances`` / ``predictions`` value."""
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        keys = list(value[0])
        if any(list(row) != keys for row in value):
            raise InvalidInput(f"{what}: rows do not all have the same keys")
        return [_column(key, [row[key] for row in value], what) for key in keys]
    return [_column(V1_INPUT_NAME, value, what)]


def _plain(column: Column) -> Any:
    if column.datatype == "BYTES":
        try:
            return np.vectorize(lambda b: b.decode(), otypes=[object])(column.array).tolist()
        except UnicodeDecodeError:
            raise InvalidInput(
                f"tensor {column.name!r}: BYTES that are not UTF-8 have no v1 (JSON) form"
            ) from None
    return column.array.tolist()


def _column(name: str, value: Any, what: str) -> Column:
    where = f"{what}: {name!r}"
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidInput(f"{where} is not a regular array") from None
    if not isinstance(value, np.ndarray):
        array = _uncoerced(array, value, where)
    if array.dtype.kind == "U":
        flat = [item.encode() for item in array.ravel().tolist()]
        array = np.array(flat, dtype=np.object_).reshape(array.shape)
    datatype = from_numpy_dtype(array.dtype)
    if datatype is None or (array.dtype.kind == "O" and not _all_bytes(array)):
        raise InvalidInput(f"{where} holds values with no tensor datatype")
    return Column(name, datatype, array)


def _uncoerced(array: np.ndarray[Any, Any], value: Any, where: str) -> np.ndarray[Any, Any]:
    """`array`, numpy's reading of `value`, unless numpy made its values something else to
    fit them in one array: text of numbers and bools mixed with strings ([1, "a"] would go
    on as b"1"), or floats of integers on both sides of 2**63 (a UINT64 tensor's values,
    which would lose their low bits). Only those two cases look at each element."""
    if array.dtype.kind == "U":
        kinds = set(map(type, np.asarray(value, dtype=np.object_).flat))
        if not all(issubclass(kind, str) for kind in kinds):
            raise InvalidInput(f"{where} mixes strings with other values")
    elif array.dtype.kind == "f" and array.size and float(np.max(np.abs(array))) >= 2.0**63:
        leaves = np.asarray(value, dtype=np.object_)
        if set(map(type, leaves.flat)) == {int}:
            try:
                return leaves.astype(np.uint64)
            except OverflowError:
                raise InvalidInput(
                    f"{where} holds integers that fit neither INT64 nor UINT64"
                ) from None
    return array


def _all_bytes(array: np.ndarray[Any, Any]) -> bool:
    return all(isinstance(item, bytes) for item in array.ravel())
