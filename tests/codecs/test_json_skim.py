"""Large v2 JSON bodies checked without parsing their values (codecs.json_skim) agree with the
whole parse on every body, and fall back to it wherever they could not."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import json_skim, validate
from gateway.errors import InvalidInput

BIG = 2000  # elements: well past SKIM_FROM bytes


def _body(inputs: list[dict[str, Any]], indent: int | None = None, **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}, indent=indent).encode()


def _tensor(name: str, data: Any, shape: list[int] | None = None) -> dict[str, Any]:
    size = int(np.asarray(data).size) if shape is None else 0
    return {"name": name, "shape": shape or [size], "datatype": "FP32", "data": data}


def _parsed_whole(body: bytes) -> list[validate.Described]:
    """What the check finds when it parses the whole body (the skim turned off)."""
    return validate.rest_request(bytearray(body), None)  # the skim takes bytes only


numbers = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 3, 100, BIG, 3 * BIG]), min_size=1, max_size=4),
    value=numbers,
    indent=st.sampled_from([None, 0, 2]),
    off_by=st.sampled_from([0, 0, 1, -1]),
)
def test_the_skim_agrees_with_the_whole_parse(
    sizes: list[int], value: float, indent: int | None, off_by: int
) -> None:
    inputs = [_tensor(f"t{i}", [value] * size) for i, size in enumerate(sizes)]
    inputs[-1]["shape"] = [max(0, sizes[-1] + off_by)]
    body = _body(inputs, indent, outputs=[{"name": "o"}], parameters={"k": "v"})
    try:
        expected: list[validate.Described] | str = _parsed_whole(body)
    except InvalidInput as exc:
        expected = str(exc)
    try:
        got: list[validate.Described] | str = validate.rest_request(body, None)
    except InvalidInput as exc:
        got = str(exc)
    assert got == expected


def test_a_large_flat_array_is_counted_not_parsed() -> None:
    body = _body([_tensor("x", list(range(BIG)), [2, BIG // 2]), _tensor("y", [1.5, 2.5])])
    document = json_skim.skim(body)
    assert document is not None
    assert document["inputs"][0]["data"] == json_skim.Skimmed(BIG)
    assert document["inputs"][1]["data"] == [1.5, 2.5]  # small: parsed as before
    assert validate.rest_request(body, None) == [("x", "FP32", [2, BIG // 2]), ("y", "FP32", [2])]


def test_a_count_that_does_not_fit_the_shape_is_refused_naming_the_tensor() -> None:
    body = _body([_tensor("x", [0.5] * BIG, [BIG + 1])])
    with pytest.raises(InvalidInput, match=f"tensor 'x': data has {BIG} elements"):
        validate.rest_request(body, None)


_BIG_ARRAY = b"[" + b"1," * BIG + b"1]"
PARSED_WHOLE = {
    "small": _body([_tensor("x", [1.0] * 10)]),
    "an escape somewhere": _body([_tensor('x"y', [1.0] * BIG)]),
    "nested data": _body([_tensor("x", [[1.0] * BIG], [1, BIG])]),
    "text data": _body([{**_tensor("x", ["ab"] * BIG), "datatype": "BYTES"}]),
    "an empty data array": _body([_tensor("e", [], [0]), _tensor("x", [1.0] * BIG)]),
    "data outside the inputs": _body([_tensor("x", [1.0] * 4)], parameters={"data": [0] * BIG}),
    "a key given twice": b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
    + _BIG_ARRAY
    + b', "data": [1]}]}',
    "not JSON": b'{"inputs": [{"data": ' + _BIG_ARRAY + b"}",
    "many tensors": _body(
        [_tensor(f"t{i}", [1.0]) for i in range(100)] + [_tensor("x", [1.0] * BIG)]
    ),
}


@pytest.mark.parametrize("why", PARSED_WHOLE)
def test_what_the_skim_cannot_account_for_is_parsed_whole(why: str) -> None:
    assert json_skim.skim(PARSED_WHOLE[why]) is None


def test_the_whole_parse_still_refuses_what_the_skim_leaves_to_it() -> None:
    twice = _body([_tensor("x", [1.0] * 4)], parameters={"data": [0] * BIG})
    assert validate.rest_request(twice, None) == [("x", "FP32", [4])]
    broken = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ['
    with pytest.raises(InvalidInput, match="not valid JSON"):
        validate.rest_request(broken + b"1," * BIG + b"1]}", None)


def test_whitespace_around_the_values_does_not_change_the_count() -> None:
    spaced = b"[ " + b" , ".join([b"1.25"] * BIG) + b" \n ]"
    head = b'{"inputs": [{"name": "x", "shape": [%d], "datatype": "FP32", "data" :\n ' % BIG
    body = head + spaced + b"}]}"
    assert orjson.loads(body)["inputs"][0]["data"] == [1.25] * BIG
    assert validate.rest_request(body, None) == [("x", "FP32", [BIG])]
