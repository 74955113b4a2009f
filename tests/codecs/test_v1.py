"""The mapping between v1 values and tensors' columns (codecs.v1): regular arrays only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.v1 import V1_INPUT_NAME, Column, from_v1, to_v1
from gateway.errors import InvalidInput


def column(name: str, datatype: str, values: Any, dtype: Any = None) -> Column:
    return Column(name, datatype, np.array(values, dtype=dtype))


def test_one_column_is_the_array_itself() -> None:
    assert to_v1([column("x", "FP32", [[1.5, 2.0]], np.float32)], "instances") == [[1.5, 2.0]]
    assert to_v1([column("t", "BYTES", [b"a", b"b"], object)], "predictions") == ["a", "b"]
    assert to_v1([], "instances") == []


def test_several_columns_sharing_rows_are_row_objects() -> None:
    columns = [column("age", "INT64", [31, 40]), column("name", "BYTES", [b"ann", b"bob"], object)]
    assert to_v1(columns, "instances") == [{"age": 31, "name": "ann"}, {"age": 40, "name": "bob"}]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ([column("a", "INT64", [1, 2]), column("b", "INT64", [1])], "do not share a first dim"),
        ([column("a", "INT64", 1), column("b", "INT64", 2)], "do not share a first dimension"),
        ([column("t", "BYTES", [b"\xff"], object)], "not UTF-8"),
    ],
)
def test_what_has_no_v1_form(columns: list[Column], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_v1(columns, "instances")


@pytest.mark.parametrize(
    ("value", "datatype", "dtype"),
    [
        ([[1.5, 2.0]], "FP64", np.float64),
        ([1, 2], "INT64", np.int64),
        ([2**63, 1], "UINT64", np.uint64),
        ([True, False], "BOOL", np.bool_),
        (["a", "é"], "BYTES", np.object_),
        ([True, 2], "INT64", np.int64),  # bools among numbers are numbers, as numpy reads them
    ],
)
def test_a_v1_array_is_one_input_of_the_datatype_of_its_values(
    value: Any, datatype: str, dtype: Any
) -> None:
    [only] = from_v1(value, "instances")
    assert (only.name, only.datatype, only.array.dtype) == (V1_INPUT_NAME, datatype, dtype)
    if datatype == "BYTES":
        assert only.array.tolist() == [v.encode() for v in value]
    else:
        assert only.array.tolist() == value


def test_rows_are_one_input_per_key() -> None:
    age, name = from_v1([{"age": 31, "name": "ann"}, {"age": 40, "name": "bob"}], "instances")
    assert (age.name, age.datatype, age.array.tolist()) == ("age", "INT64", [31, 40])
    assert (name.name, name.datatype, name.array.tolist()) == ("name", "BYTES", [b"ann", b"bob"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2], [3]], "is not a regular array"),
        ([1, "a"], "mixes strings with other values"),
        ([{"a": 1}, {"b": 2}], "rows do not all have the same keys"),
        ([2**63, -1], "fit neither INT64 nor UINT64"),
        ([None], "no tensor datatype"),
    ],
)
def test_what_v1_value_maps_to_no_tensor(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_v1(value, "instances")


finite = st.floats(allow_nan=False, allow_infinity=False)
regular = st.integers(1, 3).flatmap(
    lambda rows: st.lists(
        st.one_of(
            st.lists(st.integers(-(2**63), 2**63 - 1), min_size=rows, max_size=rows),
            st.lists(
                st.floats(allow_nan=False, allow_infinity=False), min_size=rows, max_size=rows
            ),
            st.lists(st.text(max_size=4), min_size=rows, max_size=rows),
        ),
        min_size=1,
        max_size=3,
    )
)


@settings(max_examples=100, deadline=None)
@given(regular)
def test_columns_to_v1_and_back_keep_every_value(lists: list[list[Any]]) -> None:
    columns = from_v1([[0]], "instances")[:0]  # typed empty list
    for index, values in enumerate(lists):
        [parsed] = from_v1(values, "instances")
        columns.append(Column(f"c{index}", parsed.datatype, parsed.array))
    back = from_v1(to_v1(columns, "instances"), "instances")
    if len(columns) == 1:
        back = [Column(columns[0].name, back[0].datatype, back[0].array)]
    assert [(c.name, c.datatype) for c in back] == [(c.name, c.datatype) for c in columns]
    for got, sent in zip(back, columns, strict=True):
        assert got.array.tolist() == sent.array.tolist()
