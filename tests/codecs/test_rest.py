"""The v2 REST body, plain values in and out (codecs.rest): JSON with binary tensors after it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs import rest
from gateway.errors import InvalidInput


def entries(header: dict[str, Any], tail: bytes = b"", key: str = "inputs") -> list[Any]:
    return list(rest.read_entries(header, key, memoryview(tail)))


def test_binary_entries_take_their_share_of_the_tail_in_order() -> None:
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT8", "parameters": {"binary_data_size": 2}},
            {"name": "b", "shape": [1], "datatype": "FP32", "data": [1.5]},
            {"name": "c", "shape": [1], "datatype": "INT8",
             "parameters": {"binary_data_size": 1, "k": "v"}},
        ]
    }  # fmt: skip
    a, b, c = entries(header, b"\x01\x02\x03")
    assert (a.name, a.shape, a.datatype, a.parameters, bytes(a.raw), a.data) == (
        "a", [2], "INT8", None, b"\x01\x02", None
    )  # fmt: skip
    assert (b.raw, b.data, b.parameters) == (None, [1.5], None)
    assert (bytes(c.raw), c.parameters) == (b"\x03", {"k": "v"})  # the size is framing only


@pytest.mark.parametrize(
    ("header", "tail", "message"),
    [
        ({"inputs": {}}, b"", "'inputs' must be a list"),
        ({"inputs": [3]}, b"", r"inputs\[0\] must be a JSON object"),
        ({"inputs": [{"shape": [1]}]}, b"", "needs a string 'name'"),
        ({"inputs": [{"name": "x"}]}, b"", "neither 'data' nor 'binary_data_size'"),
        ({"inputs": [{"name": "x", "parameters": []}]}, b"", "'parameters' must be a JSON object"),
        ({"inputs": [{"name": "x", "parameters": {"binary_data_size": -1}}]}, b"", "count"),
        ({"inputs": [{"name": "x", "parameters": {"binary_data_size": True}}]}, b"", "count"),
        ({"inputs": [{"name": "x", "parameters": {"binary_data_size": 3}}]}, b"ab", "runs past"),
        ({"inputs": []}, b"ab", "2 bytes after the binary tensors belong to none"),
    ],
)
def test_malformed_entries_are_refused_naming_the_fault(
    header: dict[str, Any], tail: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        entries(header, tail)


def test_the_first_fault_is_the_one_reported() -> None:
    # The reader is lazy: a caller that refuses the first entry never reads the second.
    header = {"inputs": [{"name": "x", "data": [1]}, {"shape": [1]}]}
    reader = rest.read_entries(header, "inputs", memoryview(b""))
    assert next(reader).name == "x"
    with pytest.raises(InvalidInput, match="needs a string 'name'"):
        next(reader)


def test_requested_outputs() -> None:
    assert rest.read_requested_outputs({}) is None
    assert rest.read_requested_outputs({"outputs": []}) == []
    asked = {"outputs": [{"name": "o"}, {"name": "p", "parameters": {"binary_data": True}}]}
    assert rest.read_requested_outputs(asked) == [("o", None), ("p", {"binary_data": True})]
    with pytest.raises(InvalidInput, match="'outputs' must be a list"):
        rest.read_requested_outputs({"outputs": {}})
    with pytest.raises(InvalidInput, match=r"outputs\[0\]"):
        rest.read_requested_outputs({"outputs": [{"name": 1}]})


def test_tensor_entry_with_data_or_pointing_at_the_tail() -> None:
    params = {"k": 1, "binary_data_size": 99}  # a stale size never travels on
    assert rest.tensor_entry("x", "INT8", [1], params, data=[1]) == {
        "name": "x", "datatype": "INT8", "shape": [1], "data": [1], "parameters": {"k": 1}
    }  # fmt: skip
    assert rest.tensor_entry("x", "INT8", [2], None, binary_size=2) == {
        "name": "x", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}
    }  # fmt: skip


def test_request_header_forces_the_answers_form_only_when_asked() -> None:
    inputs = [{"name": "x"}]
    asked = [("o", {"binary_data": True, "k": 1})]
    params = {"binary_data_output": True, "p": 2}
    kept = rest.request_header(inputs, "i", params, asked, None)
    assert kept == {
        "inputs": inputs,
        "id": "i",
        "parameters": params,
        "outputs": [{"name": "o", "parameters": {"binary_data": True, "k": 1}}],
    }
    as_json = rest.request_header(inputs, None, params, asked, False)
    assert as_json == {
        "inputs": inputs,
        "parameters": {"p": 2},
        "outputs": [{"name": "o", "parameters": {"k": 1}}],
    }
    as_binary = rest.request_header(inputs, "", None, None, True)
    assert as_binary == {"inputs": inputs, "parameters": {"binary_data_output": True}}


def test_response_header_names_what_is_set() -> None:
    assert rest.response_header([], "m", None, None, None) == {"model_name": "m", "outputs": []}
    full = rest.response_header([{"name": "o"}], "m", "2", "r", {"k": 1})
    assert full == {
        "model_name": "m",
        "model_version": "2",
        "id": "r",
        "parameters": {"k": 1},
        "outputs": [{"name": "o"}],
    }


@settings(max_examples=50, deadline=None)
@given(
    header=st.dictionaries(
        st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5), max_size=3
    ),
    raws=st.lists(st.binary(max_size=8), max_size=3),
)
def test_join_then_split_gives_back_the_json_and_the_tail(
    header: dict[str, Any], raws: list[bytes]
) -> None:
    body, length = rest.join_body(header, raws)
    if not raws:
        assert length is None
    parsed, tail = rest.split_body(body, length)
    assert parsed == header
    assert bytes(tail) == b"".join(raws)
    assert rest.json_length(None if length is None else str(length), len(body)) == length


def test_framing_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be an integer"):
        rest.json_length("x", 10)
    with pytest.raises(InvalidInput, match="but the body has 3 bytes"):
        rest.json_length("4", 3)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        rest.split_body(b"{", None)
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        rest.split_body(b"[]", None)
    body = orjson.dumps({"outputs": [{"parameters": {"binary_data_size": 2}}]})
    rest.check_binary_sizes(body + b"ab", len(body))
    with pytest.raises(InvalidInput, match="2 bytes of binary data, but 1 bytes follow"):
        rest.check_binary_sizes(body + b"a", len(body))


def test_plain_turns_numpy_data_into_lists() -> None:
    import numpy as np

    header = {"outputs": [{"data": np.array([1, 2])}, {"data": [3]}], "inputs": None}
    assert rest.plain(header) == {"outputs": [{"data": [1, 2]}, {"data": [3]}], "inputs": None}
