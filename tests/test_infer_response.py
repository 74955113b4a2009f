"""`InferResponse` (`gateway.infer_response`): from and to REST and gRPC, as the request asked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    InvalidInput,
    RequestedOutput,
)
from gateway._proto import pb
from gateway.codecs.rest import split_body


def _int_input(name: str = "x", values: list[int] | None = None) -> InferInput:
    values = [1, 2, 3, 4] if values is None else values
    tensor = InferInput(name, [len(values)], "INT32")
    tensor.set_data_from_numpy(np.array(values, np.int32))
    return tensor


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
        "model_version": None,  # as KServe's
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


def test_the_answers_form_is_settable_and_to_json_dict_is_all_json() -> None:
    response = InferResponse("r", "m", _outputs())
    assert response.use_binary_outputs is False
    assert response.requested_outputs is None
    response.use_binary_outputs = True
    response.requested_outputs = [
        RequestedOutput("c"),
        RequestedOutput("a", {"binary_data": False}),
    ]
    body, length = response.rest_body()
    assert length is not None
    header, tail = split_body(body, length)
    assert [o["name"] for o in header["outputs"]] == ["c", "a"]
    assert bytes(tail) == np.array([1, 2], "<i8").tobytes()
    assert header["outputs"][1]["data"] == [0.5, 1.5]
    # Forced: every output one way.
    forced, forced_length = response.rest_body(binary=False)
    assert forced_length is None
    assert [o["data"] for o in split_body(forced, None)[0]["outputs"]] == [[1, 2], [0.5, 1.5]]
    assert response.to_json_dict() == {
        "model_name": "m",
        "id": "r",
        "outputs": [
            {"name": "c", "datatype": "INT64", "shape": [2], "data": [1, 2]},
            {"name": "a", "datatype": "FP32", "shape": [2], "data": [0.5, 1.5]},
        ],
    }
