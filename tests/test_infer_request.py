"""`InferRequest` (`gateway.infer_request`): from and to REST, gRPC, dicts and dataframes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gateway import (
    InferInput,
    InferRequest,
    InvalidInput,
    RequestedOutput,
)
from gateway._proto import pb
from gateway.codecs.rest import json_length, split_body
from gateway.v2_datamodels import InferenceRequest, RequestInput, RequestOutput, as_dict


def _int_input(name: str = "x", values: list[int] | None = None) -> InferInput:
    values = [1, 2, 3, 4] if values is None else values
    tensor = InferInput(name, [len(values)], "INT32")
    tensor.set_data_from_numpy(np.array(values, np.int32))
    return tensor


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
        "model_name": "m",
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


def test_rest_body_keeps_each_inputs_form_or_forces_one() -> None:
    raw = InferInput.from_raw("r", [1], "INT8", b"\x07")
    plain = InferInput("p", [1], "INT8", data=[8])
    request = InferRequest(
        "m", [raw, plain], parameters={"binary_data_output": True}, request_id="i"
    )
    request.request_outputs = [RequestedOutput("o", {"binary_data": True})]
    body, length = request.rest_body()
    assert length is not None
    header, tail = split_body(body, length)
    assert bytes(tail) == b"\x07"
    assert [("data" in e, e.get("parameters")) for e in header["inputs"]] == [
        (False, {"binary_data_size": 1}),
        (True, None),
    ]
    assert header["parameters"] == {"binary_data_output": True}
    assert header["outputs"] == [{"name": "o", "parameters": {"binary_data": True}}]
    # Forced to JSON: every tensor in the JSON, and the answer asked for in JSON too.
    body, length = request.rest_body(False)
    assert length is None
    header, _ = split_body(body, None)
    assert [e["data"] for e in header["inputs"]] == [[7], [8]]
    assert "parameters" not in header
    assert header["outputs"] == [{"name": "o"}]
    # Forced to binary: every tensor after the JSON, and the answer asked for binary.
    body, length = request.rest_body(True)
    header, tail = split_body(body, length)
    assert bytes(tail) == b"\x07\x08"
    assert header["parameters"] == {"binary_data_output": True}
    assert header["outputs"] == [{"name": "o", "parameters": {"binary_data": True}}]
    assert InferRequest.from_bytes(body, length, "m").inputs == request.inputs


def test_to_rest_is_kserves_dict() -> None:
    """KServe's `to_rest()`: id (a new one when there is none) and model name, and data
    given as a Python list kept as given (nested here)."""
    nested = InferInput("x", [2, 2], "FP32", data=[[1.0, 2.0], [3.0, 4.0]])
    body, length = InferRequest("m", [nested], request_id="r").to_rest()
    assert length is None
    assert body == {
        "id": "r",
        "model_name": "m",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1.0, 2.0], [3.0, 4.0]]}
        ],
    }
    unnamed, _ = InferRequest("m", [nested]).to_rest()
    assert isinstance(unnamed, dict)
    assert len(unnamed["id"]) == 36  # a new uuid


def test_from_inference_request_takes_the_rest_data_model() -> None:
    request = InferenceRequest(
        id="r",
        inputs=[RequestInput("x", [2], "INT64", [1, 2], {"content_type": "np"})],
        outputs=[RequestOutput("y", {"binary_data": True})],
        parameters={"p": 1},
    )
    converted = InferRequest.from_inference_request(request, "m")
    assert (converted.model_name, converted.id, converted.parameters) == ("m", "r", {"p": 1})
    [tensor] = converted.inputs
    assert (tensor.name, tensor.shape, tensor.parameters) == ("x", [2], {"content_type": "np"})
    assert tensor.as_numpy().tolist() == [1, 2]
    assert converted.request_outputs is not None
    assert converted.request_outputs[0].name == "y"
    assert as_dict(request)["inputs"][0] == {
        "name": "x",
        "shape": [2],
        "datatype": "INT64",
        "data": [1, 2],
        "parameters": {"content_type": "np"},
    }
