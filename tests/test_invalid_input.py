"""Bad input is refused with `InvalidInput` (a ValueError) that names the tensor and the problem.

Nothing of a declared size is allocated before the declaration is checked against what arrived,
and no input, however broken, raises anything but `InvalidInput`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import InferInput, InferOutput, InferRequest, InferResponse, InvalidInput
from gateway._proto import pb
from gateway.codecs.rest import INFERENCE_HEADER, json_length, split_body


def rest_body(
    inputs: list[dict[str, Any]], tail: bytes = b"", **extra: Any
) -> tuple[bytes, int | None]:
    """A v2 REST request body; with a binary `tail`, also its JSON length."""
    head = orjson.dumps({"inputs": inputs, **extra})
    return head + tail, (len(head) if tail else None)


def binary_input(name: str, shape: list[int], datatype: str, size: Any) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape,
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }


def json_input(name: str, shape: Any, datatype: Any, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def refuse(call: Callable[[], object], *fragments: str) -> InvalidInput:
    """Run `call`, which must raise InvalidInput whose message holds every fragment."""
    with pytest.raises(InvalidInput) as info:
        call()
    assert isinstance(info.value, ValueError)  # KServe's InvalidInput is a ValueError
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def rest_request(body: bytes, length: int | None) -> InferRequest:
    return InferRequest.from_bytes(body, length, "m")


# --- REST: JSON data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "datatype", "data", "fragments"),
    [
        ([2, 2], "FP32", [1, 2, 3], ["data has 3 elements, but shape [2, 2] needs 4"]),
        ([], "INT8", [1, 2], ["data has 2 elements, but shape [] needs 1"]),
        ([0], "INT8", [1], ["data has 1 elements, but shape [0] needs 0"]),
        ([2], "BYTES", ["a"], ["data has 1 elements, but shape [2] needs 2"]),
        ([1], "FLOAT32", [1], ["unknown datatype 'FLOAT32'"]),
        ([1], None, [1], ["unknown datatype None"]),
        ([1], 7, [1], ["unknown datatype 7"]),
        ([-1], "FP32", [], ["negative dim"]),
        ([2, -3], "FP32", [], ["negative dim"]),
        ([1.0], "FP32", [1], ["non-integer dim"]),
        (["1"], "FP32", [1], ["non-integer dim"]),
        ([True], "FP32", [1], ["non-integer dim"]),
        ("1", "FP32", [1], ["shape must be a list"]),
        (None, "FP32", [1], ["shape must be a list"]),
        ([2**40], "FP32", [1], ["limit"]),
        ([2**20, 2**20], "FP32", [1], ["more than the limit"]),
        ([0, 2**62], "FP32", [], ["limit"]),
        ([1] * 40, "FP32", [1], ["40 dims"]),
        ([1], "INT8", [300], ["out of range for INT8"]),
        ([1], "INT8", [-129], ["out of range for INT8"]),
        ([1], "UINT8", [-1], ["out of range for UINT8"]),
        ([1], "UINT16", [65536], ["out of range for UINT16"]),
        ([1], "INT32", [2**31], ["out of range for INT32"]),
        ([1], "INT64", [2**63], ["out of range for INT64"]),
        ([2], "UINT64", [2**63, -1], ["out of range for UINT64"]),
        ([1], "INT32", [1.5], ["INT32 data must be integers"]),
        ([1], "INT32", [2.0], ["INT32 data must be integers"]),
        ([1], "UINT8", [True], ["UINT8 data must be integers"]),
        ([2], "BOOL", [1, 0], ["BOOL data must be true/false"]),
        ([2], "BOOL", [True, 0], ["BOOL data must be true/false"]),
        ([1], "BOOL", ["true"], ["BOOL data must be true/false"]),
        ([1], "FP32", [True], ["FP32 data must be numbers"]),
        ([1], "FP64", ["1.5"], ["FP64 data must be numbers"]),
        ([1], "FP64", [None], ["FP64 data must be numbers"]),
        ([1], "FP16", [1e5], ["out of range for FP16"]),
        ([1], "FP32", [1e39], ["out of range for FP32"]),
        ([1], "BF16", [1e39], ["out of range for BF16"]),
        ([2, 2], "INT32", [[1, 2], [3]], ["not a regular array"]),
        ([1], "BYTES", [5], ["BYTES elements must be bytes or str, got int"]),
        ([1], "BYTES", [{"a": "b"}], ["BYTES elements must be bytes or str, got dict"]),
    ],
)
def test_bad_json_tensor(shape: Any, datatype: Any, data: Any, fragments: list[str]) -> None:
    body, length = rest_body([json_input("the_tensor", shape, datatype, data)])
    refuse(lambda: rest_request(body, length), "tensor 'the_tensor'", *fragments)
    # The same through a parsed dict (KServe's InferenceRequest path).
    request = {"inputs": [json_input("the_tensor", shape, datatype, data)]}
    refuse(lambda: InferRequest.from_inference_request(request, "m"), "'the_tensor'", *fragments)
    # And as a response output.
    response = orjson.dumps({"outputs": [json_input("the_tensor", shape, datatype, data)]})
    refuse(lambda: InferResponse.from_bytes(response, None), "'the_tensor'", *fragments)


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        ({}, ["'inputs' must be a list of tensors"]),
        ({"inputs": {"name": "x"}}, ["'inputs' must be a list of tensors"]),
        ({"inputs": ["x"]}, ["inputs[0] must be a JSON object"]),
        ({"inputs": [{"shape": [1]}]}, ["inputs[0] needs a string 'name'"]),
        ({"inputs": [{"name": 3}]}, ["inputs[0] needs a string 'name'"]),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]},
            ["tensor 'x' has neither 'data' nor 'binary_data_size'"],
        ),
        (
            {"inputs": [{**json_input("x", [1], "FP32", [1]), "parameters": [1]}]},
            ["tensor 'x'", "'parameters' must be a JSON object"],
        ),
        ({"inputs": [], "id": 5}, ["'id' must be a string"]),
        ({"inputs": [], "parameters": "p"}, ["'parameters' must be a JSON object"]),
        ({"inputs": [], "outputs": {"name": "o"}}, ["'outputs' must be a list"]),
        ({"inputs": [], "outputs": [{"name": 1}]}, ["outputs[0] must be an object"]),
        ({"inputs": [], "outputs": ["o"]}, ["outputs[0] must be an object"]),
    ],
)
def test_bad_request_structure(header: dict[str, Any], fragments: list[str]) -> None:
    refuse(lambda: rest_request(orjson.dumps(header), None), *fragments)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'"inputs"',
        b'{"inputs": []} trailing',
        b'{"inputs": [NaN]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e400]}]}',
        b'{"inputs": [{"name": "\xff", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}',
        b'{"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["\xc3"]}]}',
    ],
)
def test_a_body_that_is_not_a_json_object(body: bytes) -> None:
    # Non-UTF-8 text, NaN and numbers beyond double are not JSON.
    refuse(lambda: rest_request(body, None), "body")
    refuse(lambda: InferResponse.from_bytes(body, None), "body")


def test_json_integers_beyond_64_bits() -> None:
    # JSON reads them as floats: no integer type can hold them.
    for datatype in ("UINT64", "INT64"):
        body = b'{"inputs": [{"name": "n", "shape": [1], "datatype": "%s", "data": [%d]}]}' % (
            datatype.encode(),
            2**64,
        )
        with pytest.raises(InvalidInput, match=f"tensor 'n': {datatype} data must be integers"):
            rest_request(body, None)


@pytest.mark.parametrize("inputs", [True, 3, "abc", {"name": "x"}])
def test_from_inference_request_with_inputs_that_are_not_a_list(inputs: object) -> None:
    refuse(lambda: InferRequest.from_inference_request({"inputs": inputs}, "m"), "'inputs'")
    outputs = {"inputs": [], "outputs": inputs}
    refuse(lambda: InferRequest.from_inference_request(outputs, "m"), "'outputs'")


def test_response_fields_must_have_their_types() -> None:
    refuse(lambda: InferResponse.from_rest({"model_name": 3, "outputs": []}), "'model_name'")
    refuse(lambda: InferResponse.from_rest({"outputs": [], "model_version": 1}), "version")
    refuse(lambda: InferResponse.from_rest({"model_name": "m"}), "'outputs' must be a list")


# --- REST: binary extension -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "datatype", "tail", "fragments"),
    [
        ([2], "FP32", b"\x00" * 7, ["7 bytes of data, but shape [2] of FP32 needs 8"]),
        ([2], "FP32", b"\x00" * 9, ["9 bytes of data, but shape [2] of FP32 needs 8"]),
        ([], "FP64", b"\x00" * 4, ["4 bytes of data, but shape [] of FP64 needs 8"]),
        ([3], "BOOL", b"\x01\x00", ["2 bytes of data, but shape [3] of BOOL needs 3"]),
        ([0], "INT8", b"\x00", ["1 bytes of data, but shape [0] of INT8 needs 0"]),
        ([2], "BF16", b"\x00" * 2, ["2 bytes of data, but shape [2] of BF16 needs 4"]),
        ([1], "BYTES", b"\x05\x00\x00\x00abc", ["declares 5 bytes but only 3 remain"]),
        ([1], "BYTES", b"\x05\x00", ["element 0 is truncated in its length"]),
        ([2], "BYTES", b"\x01\x00\x00\x00a", ["holds 1 BYTES elements, its shape needs 2"]),
        ([1], "BYTES", b"\x00" * 8, ["4 bytes left after its 1 BYTES elements"]),
        ([1], "BF17", b"\x00" * 2, ["unknown datatype 'BF17'"]),
        ([-2], "INT8", b"", ["negative dim"]),
    ],
)
def test_binary_data_must_fit_shape_and_datatype(
    shape: list[int], datatype: str, tail: bytes, fragments: list[str]
) -> None:
    body, length = rest_body([binary_input("bin", shape, datatype, len(tail))], tail or b" ")
    if not tail:
        body, length = body[:-1], len(body) - 1  # a JSON length equal to the whole body
    refuse(lambda: rest_request(body, length), "tensor 'bin'", *fragments)
    response = orjson.dumps({"outputs": [binary_input("bin", shape, datatype, len(tail))]})
    refuse(lambda: InferResponse.from_bytes(response + tail, len(response)), "'bin'", *fragments)


@pytest.mark.parametrize("size", [-1, 4.0, "4", True, [4], {"n": 4}])
def test_binary_data_size_must_be_a_count(size: Any) -> None:
    body, length = rest_body([binary_input("x", [1], "FP32", size)], b"\x00" * 4)
    refuse(lambda: rest_request(body, length), "tensor 'x'", "binary_data_size")


def test_binary_data_size_running_past_the_body() -> None:
    body, length = rest_body(
        [binary_input("a", [1], "FP32", 4), binary_input("b", [2], "FP32", 8)], b"\x00" * 8
    )
    refuse(lambda: rest_request(body, length), "tensor 'b'", "runs past the end", "4 bytes left")
    # Nothing binary at all, but a size is declared.
    body, _ = rest_body([binary_input("c", [1], "FP32", 4)])
    refuse(lambda: rest_request(body, None), "tensor 'c'", "0 bytes left")


def test_bytes_after_the_last_binary_tensor() -> None:
    body, length = rest_body([binary_input("x", [1], "INT32", 4)], b"\x00" * 6)
    refuse(lambda: rest_request(body, length), "2 bytes after the binary tensors belong to none")
    body, length = rest_body([json_input("x", [1], "INT32", [1])], b"junk")
    refuse(lambda: rest_request(body, length), "4 bytes after the binary tensors")


@pytest.mark.parametrize(
    ("header", "body_length", "fragment"),
    [
        ("101", 100, f"{INFERENCE_HEADER} is 101, but the body has 100 bytes"),
        ("-1", 100, f"{INFERENCE_HEADER} is -1"),
        ("ten", 100, f"{INFERENCE_HEADER} must be an integer, got 'ten'"),
        ("", 100, "must be an integer"),
        ("1.5", 100, "must be an integer"),
    ],
)
def test_inference_header_content_length(header: str, body_length: int, fragment: str) -> None:
    refuse(lambda: json_length(header, body_length), fragment)


def test_json_length_within_the_body() -> None:
    assert json_length(None, 10) is None
    assert json_length("0", 0) == 0
    assert json_length(" 7 ", 7) == 7
    body, length = rest_body([binary_input("x", [1], "INT8", 1)], b"\x05")
    assert length is not None
    refuse(lambda: split_body(body, len(body) + 1), f"{INFERENCE_HEADER} is {len(body) + 1}")
    refuse(lambda: split_body(body, -1), f"{INFERENCE_HEADER} is -1")
    refuse(lambda: rest_request(body, len(body) + 1), INFERENCE_HEADER)
    refuse(lambda: rest_request(body, length - 1), "not valid JSON")  # cuts the JSON short
    refuse(lambda: rest_request(body, None), "not valid JSON")  # the tail is not JSON
    assert rest_request(body, json_length(str(length), len(body))).inputs[0].as_numpy() == [5]


# --- declared sizes are never allocated before they are checked ------------------------------


HUGE = [1 << 32]  # within the element limit: refused only by comparing with what arrived
HUGE_CASES: list[tuple[str, Callable[[], object]]] = [
    (
        "json data",
        lambda: rest_request(*rest_body([json_input("big", HUGE, "FP64", [1.0])])),
    ),
    (
        "binary fixed-size",
        lambda: rest_request(*rest_body([binary_input("big", HUGE, "FP64", 8)], b"\x00" * 8)),
    ),
    (
        "binary BYTES",
        lambda: rest_request(*rest_body([binary_input("big", HUGE, "BYTES", 5)], b"\x01\0\0\0a")),
    ),
    (
        "binary BYTES claiming 4 GiB",
        lambda: rest_request(
            *rest_body([binary_input("big", [1], "BYTES", 5)], b"\xff\xff\xff\xffa")
        ),
    ),
    (
        "grpc raw",
        lambda: InferRequest.from_grpc_bytes(_grpc_raw_request("big", HUGE, "FP64", b"\0" * 8)),
    ),
    (
        "grpc typed contents",
        lambda: InferRequest.from_grpc_bytes(_grpc_typed_request("big", HUGE, [1])),
    ),
    (
        "grpc raw contents claiming 4 GiB",
        lambda: InferRequest.from_grpc_bytes(b"\x3a\xff\xff\xff\xff\x0f" + b"\x00" * 16),
    ),
    (
        "constructor",
        lambda: InferInput("big", HUGE, "FP64", data=[1.0]).as_numpy(),
    ),
]


def _grpc_raw_request(name: str, shape: list[int], datatype: str, raw: bytes) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.append(raw)
    return message.SerializeToString()


def _grpc_typed_request(name: str, shape: list[int], values: list[int]) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name=name, datatype="INT32", shape=shape).contents.int_contents.extend(
        values
    )
    return message.SerializeToString()


@pytest.mark.parametrize(("case", "call"), HUGE_CASES, ids=[case for case, _ in HUGE_CASES])
def test_a_huge_declared_size_is_refused_without_allocating_it(
    case: str, call: Callable[[], object], allocation_peak: Callable[[], int]
) -> None:
    refuse(call)
    # Gigabytes were declared; well under a megabyte may be used to refuse them.
    assert allocation_peak() < 1 << 20, case


@pytest.mark.parametrize(
    "shape",
    [[1 << 40], [1 << 31, 1 << 31], [1 << 62, 0], [2**63 - 1], [1 << 32] * 32, [1] * 1000],
)
def test_an_absurd_shape_is_refused_before_anything_else(
    shape: list[int], allocation_peak: Callable[[], int]
) -> None:
    # Raw contents far too short; the shape alone must be refused, and at once.
    refuse(
        lambda: InferRequest.from_grpc_bytes(_grpc_raw_request("wide", shape, "INT8", b"\x00")),
        "tensor 'wide'",
        "limit",
    )
    body, length = rest_body([binary_input("wide", shape, "INT8", 1)], b"\x00")
    refuse(lambda: rest_request(body, length), "tensor 'wide'", "limit")
    refuse(lambda: InferOutput("wide", shape, "INT8"), "tensor 'wide'", "limit")
    assert allocation_peak() < 1 << 20


# --- gRPC -----------------------------------------------------------------------------------


def _grpc_request(**inputs: Any) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    for name, (datatype, shape) in inputs.items():
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    return message


def both_grpc_ways(message: pb.ModelInferRequest, *fragments: str) -> None:
    refuse(lambda: InferRequest.from_grpc(message), *fragments)
    refuse(lambda: InferRequest.from_grpc_bytes(message.SerializeToString()), *fragments)


def test_grpc_raw_contents_count_must_match_inputs() -> None:
    message = _grpc_request(a=("INT8", [1]), b=("INT8", [1]))
    message.raw_input_contents.append(b"\x01")
    both_grpc_ways(message, "1 raw contents for 2 inputs")
    message.raw_input_contents.extend([b"\x01", b"\x01"])
    both_grpc_ways(message, "3 raw contents for 2 inputs")
    empty = pb.ModelInferRequest(model_name="m", raw_input_contents=[b""])
    both_grpc_ways(empty, "1 raw contents for 0 inputs")


def test_grpc_response_raw_contents_count_must_match_outputs() -> None:
    message = pb.ModelInferResponse(model_name="m", raw_output_contents=[b"\x01", b"\x02"])
    message.outputs.add(name="o", datatype="INT8", shape=[1])
    refuse(lambda: InferResponse.from_grpc(message), "2 raw contents for 1 outputs")
    refuse(lambda: InferResponse.from_grpc_bytes(message.SerializeToString()), "2 raw contents")


def test_grpc_contents_and_raw_contents_together() -> None:
    message = _grpc_request(x=("INT32", [1]))
    message.inputs[0].contents.int_contents.append(1)
    message.raw_input_contents.append(b"\x01\x00\x00\x00")
    both_grpc_ways(message, "tensor 'x' has both contents and raw contents")


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_grpc_half_floats_only_travel_raw(datatype: str) -> None:
    message = _grpc_request(h=(datatype, [1]))
    message.inputs[0].contents.fp32_contents.append(1.0)
    both_grpc_ways(message, "tensor 'h'", f"{datatype} travels only as raw contents")


@pytest.mark.parametrize(
    ("datatype", "shape", "field", "values", "fragments"),
    [
        ("INT8", [1], "int_contents", [300], ["out of range for INT8"]),
        ("UINT8", [1], "uint_contents", [256], ["out of range for UINT8"]),
        ("INT16", [1], "int_contents", [-40000], ["out of range for INT16"]),
        ("FP32", [2], "fp32_contents", [1.0], ["data has 1 elements, but shape [2] needs 2"]),
        ("FP32", [1], "int_contents", [1], ["data has 0 elements"]),  # wrong field
        ("BYTES", [1], "bytes_contents", [b"a", b"b"], ["data has 2 elements"]),
        ("STRING", [1], "bytes_contents", [b"a"], ["unknown datatype 'STRING'"]),
        ("INT32", [-1], "int_contents", [1], ["negative dim"]),
    ],
)
def test_grpc_typed_contents_must_fit(
    datatype: str, shape: list[int], field: str, values: list[Any], fragments: list[str]
) -> None:
    message = _grpc_request(typed=(datatype, shape))
    getattr(message.inputs[0].contents, field).extend(values)
    both_grpc_ways(message, "tensor 'typed'", *fragments)


def test_grpc_raw_contents_must_fit() -> None:
    message = _grpc_request(r=("FP32", [3]))
    message.raw_input_contents.append(b"\x00" * 11)
    both_grpc_ways(message, "tensor 'r': 11 bytes of data, but shape [3] of FP32 needs 12")
    message = _grpc_request(s=("BYTES", [1]))
    message.raw_input_contents.append(b"\x09\x00\x00\x00short")
    both_grpc_ways(message, "tensor 's': BYTES element 0 declares 9 bytes but only 5 remain")


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\x0a\x05ab",  # a string running past the end
        b"\x0b\x0c",  # groups
        b"\x0a\x02\xff\xfe",  # model_name that is not UTF-8
        b"\x2a\x03\x0a\x01\xff",  # an input whose name is not UTF-8
        b"\x3a\x10" + b"\x00" * 4,  # raw contents running past the end
        b"\x08" + b"\xff" * 11,  # a varint that never ends
        b"\x00\x00",  # field number 0
        bytes(range(256)),
    ],
)
def test_grpc_garbage(data: bytes) -> None:
    refuse(lambda: InferRequest.from_grpc_bytes(data))
    refuse(lambda: InferResponse.from_grpc_bytes(data))


def test_grpc_parameters_that_rest_sends_but_grpc_cannot_carry() -> None:
    body, _ = rest_body([json_input("x", [1], "INT8", [1])], parameters={"list": [1, 2]})
    request = rest_request(body, None)
    assert request.parameters == {"list": [1, 2]}  # fine on REST
    refuse(lambda: request.to_grpc(), "parameter 'list'", "cannot be sent over gRPC")
    refuse(lambda: request.to_grpc_bytes(), "parameter 'list'")


# --- what JSON cannot carry, on the way out -------------------------------------------------


def test_json_output_refuses_nan_and_non_utf8_naming_the_tensor() -> None:
    floats = InferOutput("scores", [2], "FP32")
    floats.set_data_from_numpy(np.array([0.5, np.inf], np.float32))
    refuse(lambda: InferResponse("r", "m", [floats]).to_rest(), "tensor 'scores'", "NaN")
    blob = InferOutput("blob", [1], "BYTES")
    blob.set_data_from_numpy(np.array([b"\x80"], dtype=object))
    refuse(lambda: InferResponse("r", "m", [blob]).to_rest(), "tensor 'blob'", "not UTF-8")
    refuse(lambda: blob.as_string(), "tensor 'blob'", "not UTF-8")
    # As binary they go.
    body, length = InferResponse("r", "m", [floats, blob], use_binary_outputs=True).to_rest()
    assert isinstance(body, bytes)
    assert np.isinf(InferResponse.from_bytes(body, length).outputs[0].as_numpy()[1])


def test_tensor_data_set_by_hand_is_checked_when_read() -> None:
    tensor = InferInput("hand", [2], "INT8", data=[1, 1000])
    refuse(lambda: InferRequest("m", [tensor]).to_rest(), "tensor 'hand'", "out of range")
    refuse(lambda: InferRequest("m", [tensor]).to_grpc(), "tensor 'hand'", "out of range")
    tensor.data = np.array([1, 2, 3], np.int8)
    refuse(lambda: tensor.as_numpy(), "tensor 'hand'", "array of 3 elements", "shape [2]")
    tensor.data = np.array([1.0, 2.0])
    refuse(lambda: tensor.as_numpy(), "tensor 'hand'", "float64 array cannot be INT8")
    empty = InferInput("empty", [1], "INT8")
    refuse(lambda: InferRequest("m", [empty]).to_rest(), "tensor 'empty' has no data")


# --- fuzzing: nothing but InvalidInput, ever ------------------------------------------------


def _valid_rest_body() -> tuple[bytes, int]:
    a = InferInput("a", [2, 2], "FP32")
    a.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(2, 2))
    s = InferInput("s", [2], "BYTES")
    s.set_data_from_numpy(np.array([b"ab", b""], dtype=object))
    j = InferInput("j", [3], "INT8", data=[1, -2, 3])
    body, length = InferRequest("m", [a, s, j], request_id="r", parameters={"p": 1}).to_rest()
    assert isinstance(body, bytes)
    assert length is not None
    return body, length


def _valid_grpc_bytes() -> bytes:
    a = InferInput("a", [2], "FP16")
    a.set_data_from_numpy(np.array([1, 2], np.float16))
    s = InferInput("s", [1], "BYTES", data=["x"])
    return InferRequest("m", [a, s], request_id="r", parameters={"p": 1.5}).to_grpc_bytes()


VALID_REST, VALID_REST_LENGTH = _valid_rest_body()
VALID_GRPC = _valid_grpc_bytes()


def _decode_everything(decode: Callable[[], InferRequest | InferResponse]) -> None:
    """Decode; on success every tensor must read, and re-encoding may refuse only politely."""
    try:
        decoded = decode()
    except InvalidInput:
        return
    tensors = decoded.inputs if isinstance(decoded, InferRequest) else decoded.outputs
    for tensor in tensors:
        tensor.as_numpy()
    for encode in (decoded.to_rest, decoded.to_grpc_bytes):
        with contextlib.suppress(InvalidInput):
            encode()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200) | st.none())
def test_random_bytes_to_from_bytes(data: bytes, length: int | None) -> None:
    if length is not None and length > len(data):
        refuse(lambda: InferRequest.from_bytes(data, length, "m"), INFERENCE_HEADER)
        return
    _decode_everything(lambda: InferRequest.from_bytes(data, length, "m"))
    _decode_everything(lambda: InferResponse.from_bytes(data, length))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_to_from_grpc_bytes(data: bytes) -> None:
    _decode_everything(lambda: InferRequest.from_grpc_bytes(data))
    _decode_everything(lambda: InferResponse.from_grpc_bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_messages(data: st.DataObject) -> None:
    body = bytearray(VALID_REST)
    grpc = bytearray(VALID_GRPC)
    for buffer in (body, grpc):
        for _ in range(data.draw(st.integers(1, 4))):
            buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(VALID_GRPC)))
    _decode_everything(lambda: InferRequest.from_bytes(bytes(body), VALID_REST_LENGTH, "m"))
    _decode_everything(lambda: InferRequest.from_grpc_bytes(bytes(grpc)))
    _decode_everything(lambda: InferRequest.from_grpc_bytes(VALID_GRPC[:cut]))
    _decode_everything(lambda: InferResponse.from_grpc_bytes(bytes(grpc)))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
DATATYPE_NAMES = ["BOOL", "UINT8", "UINT64", "INT8", "INT64", "FP16", "FP32", "BF16", "BYTES"]
tensor_entries = st.fixed_dictionaries(
    {
        "name": st.text(max_size=4) | json_values,
        "shape": st.lists(st.integers(-2, 2**40) | json_values, max_size=3) | json_values,
        "datatype": st.sampled_from(DATATYPE_NAMES) | json_values,
    },
    optional={
        "data": st.lists(st.integers(-300, 300) | json_values, max_size=6) | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 16) | json_values}
        )
        | json_values,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor_entries, max_size=3) | json_values},
        optional={
            "id": st.text(max_size=3) | json_values,
            "parameters": st.dictionaries(st.text(max_size=3), json_values) | json_values,
            "outputs": st.lists(
                st.fixed_dictionaries({"name": st.text(max_size=3) | json_values}), max_size=2
            )
            | json_values,
        },
    ),
    st.binary(max_size=24),
)
def test_structured_json_fuzz(header: dict[str, Any], tail: bytes) -> None:
    try:
        head = orjson.dumps(header)
    except orjson.JSONEncodeError:  # integers beyond 64 bits: not a body anyone can send
        return
    _decode_everything(lambda: InferRequest.from_bytes(head + tail, len(head), "m"))
    _decode_everything(lambda: InferRequest.from_inference_request(json.loads(head), "m"))
    response = {**header, "outputs": header["inputs"]}
    _decode_everything(lambda: InferResponse.from_rest(response))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(max_size=3),
            st.sampled_from([*DATATYPE_NAMES, "", "fp32", "X"]),
            st.lists(st.integers(-3, 2**63 - 1) | st.integers(0, 4), max_size=3),
            st.sampled_from(["", "bool_contents", "int_contents", "uint64_contents"])
            | st.sampled_from(["fp32_contents", "bytes_contents"]),
            st.integers(0, 5),
        ),
        max_size=3,
    ),
    st.lists(st.binary(max_size=12), max_size=4) | st.none(),
)
def test_structured_grpc_fuzz(
    inputs: list[tuple[str, str, list[int], str, int]], raws: list[bytes] | None
) -> None:
    message = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, field, count in inputs:
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        if field:
            values: dict[str, Any] = {
                "bool_contents": [True] * count,
                "int_contents": list(range(-count, count, 2)),
                "uint64_contents": [2**64 - 1] * count,
                "fp32_contents": [0.5] * count,
                "bytes_contents": [b"\xff"] * count,
            }
            getattr(tensor.contents, field).extend(values[field])
    if raws is not None:
        message.raw_input_contents.extend(raws)
    _decode_everything(lambda: InferRequest.from_grpc(message))
    _decode_everything(lambda: InferRequest.from_grpc_bytes(message.SerializeToString()))
