"""KServe's data model (``kserve.protocol.infer_type``) as the gateway implements it."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import gateway
from gateway import (
    InferenceError,
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    InvalidInput,
    RequestedOutput,
)
from gateway._proto import pb
from gateway.codecs.rest import json_length, split_body

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


# --- exports --------------------------------------------------------------------------------


def test_the_kserve_names_are_exported() -> None:
    from gateway import infer_type

    for name in (
        "InferInput",
        "InferOutput",
        "InferRequest",
        "InferResponse",
        "RequestedOutput",
        "serialize_byte_tensor",
        "deserialize_bytes_tensor",
        "to_grpc_parameters",
        "to_http_parameters",
    ):
        assert name in gateway.__all__
        assert name in infer_type.__all__
        assert getattr(gateway, name) is getattr(infer_type, name)
    for name in ("InvalidInput", "InferenceError"):
        assert name in gateway.__all__
    assert issubclass(gateway.InvalidInput, ValueError)


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

    plain, none = InferRequest("m", [as_json]).to_rest()
    assert none is None
    assert plain == {"inputs": [{"name": "j", "datatype": "INT32", "shape": [2], "data": [3, 4]}]}
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


# --- requests -------------------------------------------------------------------------------


def test_request_constructor() -> None:
    outputs = [RequestedOutput("o")]
    request = InferRequest(
        "m",
        [_int_input()],
        request_id="r1",
        parameters={"a": 1},
        request_outputs=outputs,
        model_version="2",
    )
    assert request.model_name == "m"
    assert request.id == "r1"
    assert request.parameters == {"a": 1}
    assert request.request_outputs is outputs
    assert request.model_version == "2"
    assert request.from_grpc is False
    assert request.use_binary_outputs is False


def test_request_with_raw_inputs() -> None:
    tensor = InferInput("x", [2], "INT16")
    request = InferRequest("m", [tensor], raw_inputs=[b"\x01\x00\x02\x00"], from_grpc=True)
    assert tensor.as_numpy().tolist() == [1, 2]
    assert request.from_grpc is True
    assert request.use_binary_outputs is True  # raw in, raw out
    with pytest.raises(InvalidInput, match="2 raw inputs for 1 inputs"):
        InferRequest("m", [InferInput("y", [1], "INT8")], raw_inputs=[b"\x01", b"\x02"])
    with pytest.raises(InvalidInput, match=r"tensor 'z': 3 bytes of data, but shape \[2\]"):
        InferRequest("m", [InferInput("z", [2], "INT16")], raw_inputs=[b"\x01\x00\x02"])


def test_get_input_by_name() -> None:
    a, b = _int_input("a"), _int_input("b")
    request = InferRequest("m", [a, b])
    assert request.get_input_by_name("b") is b
    assert request.get_input_by_name("a") is a
    assert request.get_input_by_name("c") is None


def test_from_bytes_reads_ids_parameters_and_requested_outputs() -> None:
    body = json.dumps(
        {
            "id": "r9",
            "parameters": {"binary_data_output": True, "p": 2.0},
            "inputs": [{"name": "x", "shape": [2], "datatype": "BOOL", "data": [True, False]}],
            "outputs": [{"name": "o", "parameters": {"binary_data": False}}, {"name": "q"}],
        }
    ).encode()
    request = InferRequest.from_bytes(body, json_length(str(len(body)), len(body)), "model")
    assert request.model_name == "model"
    assert request.id == "r9"
    assert request.parameters == {"binary_data_output": True, "p": 2.0}
    assert type(request.parameters["p"]) is float
    assert request.from_grpc is False
    assert request.use_binary_outputs is True
    assert request.inputs[0].as_numpy().tolist() == [True, False]
    assert request.request_outputs == [
        RequestedOutput("o", {"binary_data": False}),
        RequestedOutput("q"),
    ]
    assert [o.binary_data for o in request.request_outputs or []] == [False, None]
    assert InferRequest.from_bytes(body, None, "model") == request


def test_use_binary_outputs_over_rest_follows_binary_data_output() -> None:
    def read(params: dict[str, Any] | None) -> InferRequest:
        header: dict[str, Any] = {"inputs": []}
        if params is not None:
            header["parameters"] = params
        return InferRequest.from_bytes(json.dumps(header).encode(), None, "m")

    assert read(None).use_binary_outputs is False
    assert read({"binary_data_output": False}).use_binary_outputs is False
    assert read({"binary_data_output": True}).use_binary_outputs is True


def test_use_binary_outputs_over_grpc_follows_raw_inputs() -> None:
    raw = InferRequest.from_grpc(InferRequest("m", [_int_input()]).to_grpc())
    assert raw.from_grpc is True
    assert raw.use_binary_outputs is True
    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="x", datatype="INT32", shape=[2])
    tensor.contents.int_contents.extend([7, 8])
    # binary_data_output means nothing on gRPC
    typed.parameters["binary_data_output"].bool_param = True
    request = InferRequest.from_grpc(typed)
    assert request.inputs[0].as_numpy().tolist() == [7, 8]
    assert request.use_binary_outputs is False
    assert InferRequest.from_grpc_bytes(typed.SerializeToString()).use_binary_outputs is False


def test_from_inference_request_with_a_dict() -> None:
    request = InferRequest.from_inference_request(
        {
            "id": "r",
            "parameters": {"k": "v"},
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP32", "data": [1.5, 2]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hi"]},
            ],
            "outputs": [{"name": "o"}],
        },
        "m",
    )
    assert request.model_name == "m"
    assert request.id == "r"
    assert request.parameters == {"k": "v"}
    assert request.inputs[0].as_numpy().tolist() == [1.5, 2.0]
    assert request.inputs[1].as_string() == ["hi"]
    assert request.request_outputs == [RequestedOutput("o")]


def test_from_inference_request_with_an_object() -> None:
    tensor = SimpleNamespace(name="a", shape=[1], datatype="INT8", data=[3])
    request = InferRequest.from_inference_request(SimpleNamespace(id="r", inputs=[tensor]), "m")
    assert request.id == "r"
    assert request.inputs[0].as_numpy().tolist() == [3]


def test_from_inference_request_checks_the_data() -> None:
    bad = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}
    with pytest.raises(InvalidInput, match="tensor 'a': data out of range for INT8"):
        InferRequest.from_inference_request(bad, "m")


def test_to_rest_of_binary_inputs() -> None:
    strings = InferInput("s", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"ab", b"\xff"], dtype=object))
    request = InferRequest(
        "m",
        [_int_input("x", [5]), strings],
        request_id="r",
        parameters={"binary_data_output": True},
        request_outputs=[RequestedOutput("o", {"binary_data": True})],
    )
    body, length = request.to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    header = json.loads(body[:length])
    assert header == {
        "id": "r",
        "inputs": [
            {"name": "x", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}},
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": 11},
            },
        ],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "o", "parameters": {"binary_data": True}}],
    }
    assert body[length:] == b"\x05\x00\x00\x00" + b"\x02\x00\x00\x00ab\x01\x00\x00\x00\xff"
    assert InferRequest.from_bytes(body, length, "m") == request


def test_to_grpc_of_a_request_sends_raw_contents() -> None:
    as_json = InferInput("j", [2], "INT8", data=[1, -1])
    request = InferRequest(
        "m",
        [_int_input("x", [7]), as_json],
        request_id="r",
        parameters={"binary_data_output": True, "keep": 1},
        request_outputs=[RequestedOutput("o", {"binary_data": True, "top": 3})],
        model_version="4",
    )
    message = request.to_grpc()
    assert isinstance(message, pb.ModelInferRequest)
    assert (message.model_name, message.model_version, message.id) == ("m", "4", "r")
    assert list(message.raw_input_contents) == [b"\x07\x00\x00\x00", b"\x01\xff"]
    assert not any(t.HasField("contents") for t in message.inputs)
    # REST framing parameters stay behind.
    assert set(message.parameters) == {"keep"}
    assert set(message.outputs[0].parameters) == {"top"}
    assert message.SerializeToString(deterministic=True) == pb.ModelInferRequest.FromString(
        request.to_grpc_bytes()
    ).SerializeToString(deterministic=True)


def test_as_dataframe() -> None:
    strings = InferInput("e", [3], "BYTES")
    strings.set_data_from_numpy(np.array([b"\xff", b"a", b""], dtype=object))
    request = InferRequest(
        "m",
        [
            InferInput("a", [3], "INT32", data=[1, 2, 3]),
            InferInput("b", [3, 1], "FP32", data=[1, 2, 3]),
            InferInput("c", [3, 2], "INT8", data=[1, 2, 3, 4, 5, 6]),
            InferInput("d", [3], "BYTES", data=["x", "y", "z"]),
            strings,
        ],
    )
    frame = request.as_dataframe()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["a", "b", "c", "d", "e"]
    assert frame["a"].tolist() == [1, 2, 3]
    assert frame["b"].tolist() == [1.0, 2.0, 3.0]  # [N, 1] becomes one column
    assert [row.tolist() for row in frame["c"]] == [[1, 2], [3, 4], [5, 6]]
    assert frame["d"].tolist() == ["x", "y", "z"]
    assert frame["e"].tolist() == [b"\xff", "a", ""]  # text where it is UTF-8
    # The tensor's own data is untouched.
    assert strings.as_numpy().tolist() == [b"\xff", b"a", b""]


# --- responses ------------------------------------------------------------------------------


def _outputs() -> list[InferOutput]:
    a = InferOutput("a", [2], "FP32")
    a.set_data_from_numpy(np.array([0.5, 1.5], np.float32))
    b = InferOutput("b", [1], "BYTES")
    b.set_data_from_numpy(np.array([b"hi"], dtype=object))
    c = InferOutput("c", [2], "INT64", data=[1, 2])
    return [a, b, c]


def test_response_constructor_and_get_output_by_name() -> None:
    outputs = _outputs()
    response = InferResponse("r", "m", outputs, model_version="1", parameters={"p": True})
    assert (response.id, response.model_name, response.model_version) == ("r", "m", "1")
    assert response.parameters == {"p": True}
    assert response.outputs is outputs
    assert response.from_grpc is False
    assert response.get_output_by_name("b") is outputs[1]
    assert response.get_output_by_name("zz") is None


def test_response_with_raw_outputs() -> None:
    out = InferOutput("o", [2], "UINT16")
    InferResponse("r", "m", [out], raw_outputs=[b"\x01\x00\xff\xff"])
    assert out.as_numpy().tolist() == [1, 65535]
    with pytest.raises(InvalidInput, match="1 raw outputs for 2 outputs"):
        InferResponse("r", "m", [InferOutput("a", [0], "INT8")] * 2, raw_outputs=[b""])


def test_response_to_rest_is_a_dict_without_binary() -> None:
    body, length = InferResponse("r", "m", _outputs(), parameters={"p": 1}).to_rest()
    assert length is None
    assert body == {
        "model_name": "m",
        "id": "r",
        "parameters": {"p": 1},
        "outputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "data": [0.5, 1.5]},
            {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
            {"name": "c", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        ],
    }
    assert json.loads(json.dumps(body)) == body
    assert InferResponse.from_rest(body) == InferResponse("r", "m", _outputs(), parameters={"p": 1})


def test_response_to_rest_binary() -> None:
    response = InferResponse("r", "m", _outputs(), model_version="3", use_binary_outputs=True)
    body, length = response.to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    header = json.loads(body[:length])
    assert header["model_version"] == "3"
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 6, 16]
    assert all("data" not in o for o in header["outputs"])
    parsed = InferResponse.from_bytes(body, length)
    assert parsed == response
    assert parsed.get_output_by_name("b").as_numpy().tolist() == [b"hi"]  # type: ignore[union-attr]


def test_requested_outputs_choose_and_their_binary_data_wins() -> None:
    requested = [
        RequestedOutput("c", {"binary_data": False}),
        RequestedOutput("a"),  # follows binary_data_output
    ]
    response = InferResponse(
        "r", "m", _outputs(), use_binary_outputs=True, requested_outputs=requested
    )
    body, length = response.to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    header = json.loads(body[:length])
    assert [o["name"] for o in header["outputs"]] == ["c", "a"]  # "b" was not asked for
    assert header["outputs"][0]["data"] == [1, 2]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert body[length:] == np.array([0.5, 1.5], "<f4").tobytes()

    # The other way round: JSON by default, binary where the output asks.
    response = InferResponse(
        "r", "m", _outputs(), requested_outputs=[RequestedOutput("b", {"binary_data": True})]
    )
    body, length = response.to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    assert json.loads(body[:length])["outputs"] == [
        {"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
    ]


def test_a_request_answers_as_it_asked() -> None:
    body = json.dumps(
        {
            "inputs": [],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "b", "parameters": {"binary_data": False}}, {"name": "a"}],
        }
    ).encode()
    request = InferRequest.from_bytes(body, None, "m")
    response = InferResponse(
        "r",
        "m",
        _outputs(),
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
    out, length = response.to_rest()
    assert isinstance(out, bytes)
    assert length is not None
    parsed = InferResponse.from_bytes(out, length)
    assert [o.name for o in parsed.outputs] == ["b", "a"]
    assert parsed.outputs[0].as_string() == ["hi"]
    assert parsed.outputs[1].as_numpy().tolist() == [0.5, 1.5]


def test_requested_output_that_does_not_exist() -> None:
    response = InferResponse("r", "m", _outputs(), requested_outputs=[RequestedOutput("nope")])
    with pytest.raises(InvalidInput, match="output 'nope' was requested, but model 'm'"):
        response.to_rest()
    with pytest.raises(InvalidInput, match="output 'nope'"):
        response.to_grpc()


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


def test_response_to_grpc_typed_contents_by_default() -> None:
    message = InferResponse("r", "m", _outputs()).to_grpc()
    assert isinstance(message, pb.ModelInferResponse)
    assert len(message.raw_output_contents) == 0
    a, b, c = message.outputs
    assert list(a.contents.fp32_contents) == [0.5, 1.5]
    assert list(b.contents.bytes_contents) == [b"hi"]
    assert list(c.contents.int64_contents) == [1, 2]
    parsed = InferResponse.from_grpc(message)
    assert parsed.from_grpc is True
    assert parsed == InferResponse("r", "m", _outputs())


def test_response_to_grpc_raw_when_the_request_came_raw() -> None:
    request = InferRequest.from_grpc_bytes(InferRequest("m", [_int_input()]).to_grpc_bytes())
    response = InferResponse("r", "m", _outputs(), use_binary_outputs=request.use_binary_outputs)
    message = response.to_grpc()
    assert not any(o.HasField("contents") for o in message.outputs)
    assert list(message.raw_output_contents) == [
        np.array([0.5, 1.5], "<f4").tobytes(),
        b"\x02\x00\x00\x00hi",
        np.array([1, 2], "<i8").tobytes(),
    ]
    assert InferResponse.from_grpc_bytes(response.to_grpc_bytes()) == response


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_response_to_grpc_raw_for_all_when_a_type_has_no_typed_contents(datatype: str) -> None:
    half = InferOutput("h", [1], datatype)
    half.set_data_from_numpy(np.array([1.5], np.float16 if datatype == "FP16" else np.float32))
    message = InferResponse("r", "m", [*_outputs(), half]).to_grpc()
    assert len(message.raw_output_contents) == 4
    assert not any(o.HasField("contents") for o in message.outputs)
    parsed = InferResponse.from_grpc(message)
    assert parsed.get_output_by_name("h").as_numpy().tolist() == [1.5]  # type: ignore[union-attr]


def test_response_from_tritonclient_style_message_is_read() -> None:
    from tritonclient.grpc import service_pb2 as triton_pb

    message = triton_pb.ModelInferResponse(model_name="m", id="r")
    out = message.outputs.add(name="o", datatype="UINT8", shape=[3])
    out.parameters["k"].string_param = "v"
    message.raw_output_contents.append(b"\x01\x02\x03")
    response = InferResponse.from_grpc(message)
    assert response.outputs[0].as_numpy().tolist() == [1, 2, 3]
    assert response.outputs[0].parameters == {"k": "v"}


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
