"""Tensors in and out of the wire forms (gateway.messages): what InferRequest, InferResponse
and the hops build their messages with."""

from __future__ import annotations

import numpy as np
import pytest

from gateway import messages
from gateway._proto import pb
from gateway.codecs import rest as rest_codec
from gateway.errors import InvalidInput
from gateway.tensor import Buffer, InferInput, InferOutput, RequestedOutput


def test_rest_tensors_and_back() -> None:
    raw = InferInput.from_raw("r", [2], "INT16", b"\x01\x00\x02\x00")
    plain = InferInput("p", [1], "BYTES", data=["a"])
    raws: list[Buffer] = []
    entries = messages.rest_entries([(raw, True), (plain, False)], raws)
    assert [bytes(r) for r in raws] == [b"\x01\x00\x02\x00"]
    assert entries[1]["data"] == ["a"]
    body, length = rest_codec.join_body({"inputs": entries}, raws)
    header, tail = rest_codec.split_body(body, length)
    back = messages.rest_tensors(InferInput, header, "inputs", tail)
    assert back == [raw, plain]
    assert back[0].is_raw
    assert not back[1].is_raw
    # Data that does not fit its tensor is refused on arrival, naming it.
    header = {"outputs": [{"name": "o", "shape": [2], "datatype": "FP32", "data": [1]}]}
    with pytest.raises(InvalidInput, match="'o'"):
        messages.rest_tensors(InferOutput, header, "outputs", memoryview(b""))


def test_rest_form_is_a_dict_until_something_is_binary() -> None:
    form, length = messages.rest_form({"outputs": [{"data": np.array([1, 2])}]}, [])
    assert (form, length) == ({"outputs": [{"data": [1, 2]}]}, None)
    form, length = messages.rest_form({"a": 1}, [b"xy"])
    assert (form, length) == (b'{"a":1}xy', 7)


def test_requested_outputs() -> None:
    assert messages.requested_outputs(None) is None
    assert messages.requested_outputs([("o", {"binary_data": True})]) == [
        RequestedOutput("o", {"binary_data": True})
    ]


@pytest.mark.parametrize("raw", [True, False])
def test_grpc_tensors_and_back(raw: bool) -> None:
    fp = InferOutput("f", [2], "FP32")
    fp.set_data_from_numpy(np.array([0.5, 1.5], np.float32))
    text = InferOutput("t", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"\xff"], dtype=object))
    message = pb.ModelInferResponse()
    raws = messages.fill_grpc_tensors(message.outputs, [fp, text], raw)
    assert len(raws) == (2 if raw else 0)
    assert all(o.HasField("contents") for o in message.outputs) is not raw
    back = messages.grpc_tensors(InferOutput, message.outputs, raws, "output")
    assert back == [fp, text]


def test_v1_values_and_back() -> None:
    x = InferInput("x", [2, 1], "INT64", data=[1, 2])
    assert messages.v1_value([x], "instances") == [[1], [2]]
    [back] = messages.v1_tensors([[1], [2]], InferInput, "instances")
    assert (back.name, back.shape, back.datatype) == ("input-0", [2, 1], "INT64")
    assert back.as_numpy().tolist() == [[1], [2]]
    rows = messages.v1_tensors([{"a": 1.5, "b": "x"}], InferOutput, "predictions")
    assert [(t.name, t.datatype, type(t).__name__) for t in rows] == [
        ("a", "FP64", "InferOutput"),
        ("b", "BYTES", "InferOutput"),
    ]
    assert messages.v1_value(rows, "predictions") == [{"a": 1.5, "b": "x"}]
