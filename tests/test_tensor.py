"""Tensors (`gateway.tensor`): `InferInput`, `InferOutput`, `RequestedOutput`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gateway import (
    InferenceError,
    InferInput,
    InferOutput,
    InferRequest,
    InvalidInput,
    RequestedOutput,
)
from gateway._proto import pb
from gateway.codecs.rest import split_body

Array = np.ndarray[Any, Any]


def _binary_request(*inputs: InferInput, **kwargs: Any) -> tuple[bytes, int]:
    body, length = InferRequest("m", list(inputs), **kwargs).to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    return body, length


def _int_input(name: str = "x", values: list[int] | None = None) -> InferInput:
    values = [1, 2, 3, 4] if values is None else values
    tensor = InferInput(name, [len(values)], "INT32")
    tensor.set_data_from_numpy(np.array(values, np.int32))
    return tensor


# --- tensors --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [InferInput, InferOutput])
def test_tensor_constructor_and_properties(cls: type[InferInput]) -> None:
    tensor = cls("t", [2, 2], "fp32", data=[1, 2, 3, 4], parameters={"k": "v"})
    assert tensor.name == "t"
    assert tensor.datatype == "FP32"  # normalized
    assert tensor.shape == [2, 2]
    assert tensor.parameters == {"k": "v"}
    assert tensor.data == [1, 2, 3, 4]
    np.testing.assert_array_equal(tensor.as_numpy(), [[1.0, 2.0], [3.0, 4.0]])
    assert tensor.as_numpy().dtype == np.float32


def test_tensor_without_data() -> None:
    tensor = InferInput("t", [1], "INT8")
    assert tensor.data is None
    assert not tensor.has_data()
    with pytest.raises(InvalidInput, match="tensor 't' has no data"):
        tensor.as_numpy()


def test_tensor_constructor_checks_datatype_and_shape() -> None:
    with pytest.raises(InvalidInput, match="tensor 't': unknown datatype 'FLOAT'"):
        InferInput("t", [1], "FLOAT")
    with pytest.raises(InvalidInput, match=r"tensor 't': shape .* negative"):
        InferOutput("t", [-1], "FP32")


def test_shape_setter_reshapes_and_checks() -> None:
    tensor = _int_input()
    tensor.shape = [2, 2]
    assert tensor.shape == [2, 2]
    assert tensor.as_numpy().shape == (2, 2)
    with pytest.raises(InvalidInput, match="negative"):
        tensor.shape = [-4]
    assert tensor.shape == [2, 2]
    tensor.shape = [3]  # 3 elements cannot hold 4: refused when read
    with pytest.raises(InvalidInput, match="does not fit shape"):
        tensor.as_numpy()


def test_parameters_setter_accepts_a_protobuf_map() -> None:
    message = pb.ModelInferRequest()
    message.parameters["n"].int64_param = 3
    message.parameters["f"].double_param = 2.0
    tensor = InferOutput("t", [1], "INT8")
    tensor.parameters = message.parameters
    assert tensor.parameters == {"n": 3, "f": 2.0}
    assert type(tensor.parameters["f"]) is float
    tensor.parameters = None
    assert tensor.parameters is None


def test_data_setter_replaces_the_data() -> None:
    tensor = InferInput("t", [2], "INT64", data=[1, 2])
    assert tensor.as_numpy().tolist() == [1, 2]
    tensor.data = [5, 6]
    assert tensor.as_numpy().tolist() == [5, 6]


def test_data_of_wire_tensor_is_a_flat_list_whose_changes_are_sent() -> None:
    body, length = _binary_request(_int_input("x", [1, 2, 3, 4]))
    request = InferRequest.from_bytes(body, length, "m")
    tensor = request.inputs[0]
    tensor.shape = [2, 2]
    data = tensor.data
    assert data == [1, 2, 3, 4]
    assert tensor.data is data  # converted once
    data[0] = 99
    assert tensor.as_numpy().tolist() == [[99, 2], [3, 4]]
    sent, sent_length = request.to_rest()
    assert isinstance(sent, bytes)  # it arrived binary, so it still goes binary
    assert sent_length is not None
    again = InferRequest.from_bytes(sent, sent_length, "m")
    assert again.inputs[0].as_numpy().tolist() == [[99, 2], [3, 4]]


def test_reading_data_keeps_what_json_cannot_carry_sendable() -> None:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, np.nan], np.float32))
    request = InferRequest.from_bytes(*_binary_request(tensor), "m")
    assert request.inputs[0].data[0] == 1.0
    body, length = request.to_rest()
    assert isinstance(body, bytes)
    assert np.isnan(InferRequest.from_bytes(body, length, "m").inputs[0].as_numpy()[1])


def test_as_numpy_of_binary_data_is_a_read_only_view_of_the_body() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    tensor = InferInput("x", [3, 4], "FP64")
    tensor.set_data_from_numpy(values)
    body, length = _binary_request(tensor)
    array = InferRequest.from_bytes(body, length, "m").inputs[0].as_numpy()
    np.testing.assert_array_equal(array, values)
    assert np.shares_memory(array, np.frombuffer(body, np.uint8))
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0, 0] = 1.0


def test_as_numpy_of_grpc_raw_contents_is_a_view_of_the_message() -> None:
    data = InferRequest("m", [_int_input()]).to_grpc_bytes()
    array = InferRequest.from_grpc_bytes(data).inputs[0].as_numpy()
    assert array.tolist() == [1, 2, 3, 4]
    assert np.shares_memory(array, np.frombuffer(data, np.uint8))
    assert not array.flags.writeable


def test_as_numpy_of_json_data_is_read_only() -> None:
    array = InferInput("x", [2], "INT8", data=[1, 2]).as_numpy()
    assert not array.flags.writeable


def test_as_numpy_of_a_set_array_keeps_it() -> None:
    values = np.arange(6, dtype=np.int16).reshape(2, 3)
    tensor = InferOutput("o", [2, 3], "INT16")
    tensor.set_data_from_numpy(values)
    assert np.shares_memory(tensor.as_numpy(), values)
    assert tensor.data is values


def test_as_string() -> None:
    tensor = InferInput("s", [2, 2], "BYTES", data=["a", "é", "", "日本"])
    assert tensor.as_string() == [["a", "é"], ["", "日本"]]
    assert InferInput("s", [], "BYTES", data=["one"]).as_string() == "one"
    with pytest.raises(InvalidInput, match="tensor 'n' is INT8, not BYTES"):
        InferInput("n", [1], "INT8", data=[1]).as_string()
    raw = InferInput("b", [1], "BYTES")
    raw.set_data_from_numpy(np.array([b"\xff"], dtype=object))
    with pytest.raises(InvalidInput, match="tensor 'b': an element is not UTF-8"):
        raw.as_string()


# --- set_data_from_numpy --------------------------------------------------------------------


def test_set_data_from_numpy_binary_or_json() -> None:
    binary = _int_input("b", [1, 2])
    as_json = InferInput("j", [2], "INT32")
    as_json.set_data_from_numpy(np.array([3, 4], np.int32), binary_data=False)
    body, length = InferRequest("m", [binary, as_json]).to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    header, tail = split_body(body, length)
    assert header["inputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in header["inputs"][0]
    assert header["inputs"][1]["data"] == [3, 4]
    assert bytes(tail) == np.array([1, 2], "<i4").tobytes()

    plain, none = InferRequest("m", [as_json], request_id="r").to_rest()
    assert none is None
    assert plain == {
        "id": "r",
        "model_name": "m",
        "inputs": [{"name": "j", "datatype": "INT32", "shape": [2], "data": [3, 4]}],
    }
    json.dumps(plain)  # plain Python values, for callers that serialize it themselves


@pytest.mark.parametrize(
    ("datatype", "array", "problem"),
    [
        ("INT32", np.array([1, 2], np.int64), "unexpected datatype INT64"),
        ("FP32", np.array([1.0, 2.0]), "unexpected datatype FP64"),
        ("UINT16", np.array([1, 2], np.int16), "unexpected datatype INT16"),
        ("BF16", np.array([1, 2], np.int32), "BF16 takes a float array"),
        ("BYTES", np.array([1, 2]), "unexpected datatype INT64"),
        ("INT32", np.array([[1, 2]], np.int32), r"unexpected numpy array shape \[1, 2\]"),
    ],
)
def test_set_data_from_numpy_refuses(datatype: str, array: Array, problem: str) -> None:
    tensor = InferInput("t", [2], datatype)
    with pytest.raises(InferenceError, match=problem):
        tensor.set_data_from_numpy(array)
    assert not tensor.has_data()


def test_set_data_from_numpy_refuses_what_is_not_an_array() -> None:
    with pytest.raises(InferenceError, match="numpy array"):
        InferInput("t", [2], "INT32").set_data_from_numpy([1, 2])  # type: ignore[arg-type]


def test_set_data_from_numpy_refuses_json_for_non_utf8_bytes() -> None:
    tensor = InferInput("t", [1], "BYTES")
    with pytest.raises(InferenceError, match=r"not UTF-8.*binary_data=True"):
        tensor.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=False)
    tensor.set_data_from_numpy(np.array([b"\xff"], dtype=object))
    assert tensor.as_numpy().tolist() == [b"\xff"]


def test_set_data_from_numpy_bf16_takes_floats() -> None:
    tensor = InferInput("t", [3], "BF16")
    tensor.set_data_from_numpy(np.array([1.5, -2.0, 1.0 + 2.0**-9]))
    assert tensor.as_numpy().dtype == np.float32
    assert tensor.as_numpy().tolist() == [1.5, -2.0, 1.0]  # rounded to BF16
    assert bytes(tensor.wire_bytes()) == np.array([0x3FC0, 0xC000, 0x3F80], "<u2").tobytes()


def test_set_data_from_numpy_scalar_and_empty() -> None:
    scalar = InferInput("s", [], "FP64")
    scalar.set_data_from_numpy(np.array(2.5))
    empty = InferInput("e", [0, 3], "UINT8")
    empty.set_data_from_numpy(np.zeros((0, 3), np.uint8))
    request = InferRequest.from_bytes(*_binary_request(scalar, empty), "m")
    assert request.inputs[0].as_numpy().shape == ()
    assert request.inputs[0].as_numpy() == 2.5
    assert request.inputs[1].as_numpy().shape == (0, 3)


def test_requested_output() -> None:
    output = RequestedOutput("o")
    assert output.name == "o"
    assert output.parameters is None
    assert output.binary_data is None
    output.parameters = {"binary_data": True, "k": 1}
    assert output.binary_data is True
    message = pb.ModelInferRequest()
    message.parameters["binary_data"].bool_param = False
    output.parameters = message.parameters
    assert output.parameters == {"binary_data": False}
    assert output.binary_data is False
    assert RequestedOutput("o", {"binary_data": False}) == output
    assert RequestedOutput("p", {"binary_data": False}) != output


def test_tensors_compare_by_value() -> None:
    a = InferInput("x", [2], "FP32", data=[1, 2])
    b = InferInput("x", [2], "FP32")
    b.set_data_from_numpy(np.array([1, 2], np.float32))
    assert a == b
    assert a != InferInput("x", [2], "FP32", data=[1, 3])
    assert a != InferOutput("x", [2], "FP32", data=[1, 2])  # an input is not an output
    assert InferInput("x", [1], "FP32", data=[np.nan]) == InferInput(
        "x", [1], "FP32", data=[np.nan]
    )
    assert InferInput("x", [1], "FP32") != a


def test_is_raw_and_prefers_binary_say_how_the_data_came_and_how_it_goes() -> None:
    raw = InferInput.from_raw("x", [2], "INT8", b"\x01\x02")
    assert raw.is_raw
    assert raw.prefers_binary
    assert bytes(raw.wire_bytes()) == b"\x01\x02"
    json_data = InferInput("y", [2], "INT8", data=[1, 2])
    assert not json_data.is_raw
    assert not json_data.prefers_binary
    # Reading a raw tensor's data decodes it, but it keeps going binary.
    assert raw.data == [1, 2]
    assert not raw.is_raw
    assert raw.prefers_binary
    # set_data_from_numpy decides, either way.
    raw.set_data_from_numpy(np.array([3, 4], np.int8), binary_data=False)
    assert not raw.prefers_binary
    json_data.set_data_from_numpy(np.array([3, 4], np.int8), binary_data=True)
    assert json_data.prefers_binary
    assert not json_data.is_raw


def test_an_outputs_array_goes_by_kserves_keyword() -> None:
    output = InferOutput("y", [2], "INT64")
    output.set_data_from_numpy(output_tensor=np.array([1, 2]), binary_data=False)
    assert output.as_numpy().tolist() == [1, 2]
