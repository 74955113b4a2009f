"""The v2 gRPC messages (codecs.grpc): raw contents kept out of protobuf (`join_raw` /
`split_raw`), and tensors read from and written into messages as plain values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._proto import pb
from gateway.codecs.grpc import (
    RAW_INPUT_FIELD,
    RAW_OUTPUT_FIELD,
    TensorFields,
    describe_tensor,
    fill_contents,
    join_raw,
    needs_raw,
    parse_raw,
    read_requested_outputs,
    read_tensors,
    split_raw,
    string_field,
)
from gateway.errors import InvalidInput

# Lengths around the varint boundaries (1, 2 and 3 bytes).
raw_contents = st.lists(
    st.binary(max_size=20)
    | st.sampled_from([127, 128, 300, 16383, 16384]).map(lambda n: b"\xab" * n),
    max_size=5,
)


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(
        model_name=draw(st.text(max_size=8)),
        model_version=draw(st.sampled_from(["", "1"])),
        id=draw(st.text(max_size=8)),
    )
    for key in draw(st.lists(st.text(max_size=4), max_size=3)):
        message.parameters[key].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    for name in draw(st.lists(st.text(max_size=4), max_size=3)):
        tensor = message.inputs.add(name=name, datatype="FP32")
        tensor.shape.extend(draw(st.lists(st.integers(0, 2**40), max_size=3)))
        # Nested bytes that must not be mistaken for raw contents.
        tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=9), max_size=2)))
    for name in draw(st.lists(st.text(max_size=4), max_size=2)):
        message.outputs.add(name=name)
    return message


@settings(max_examples=150, deadline=None)
@given(requests(), raw_contents)
def test_join_raw_writes_what_protobuf_writes(
    message: pb.ModelInferRequest, raws: list[bytes]
) -> None:
    # Deterministic: map entries are otherwise written in any order.
    joined = join_raw(message.SerializeToString(deterministic=True), raws, RAW_INPUT_FIELD)
    # raw_input_contents is the last field, so protobuf serializes it last: same bytes.
    full = pb.ModelInferRequest()
    full.CopyFrom(message)
    full.raw_input_contents.extend(raws)
    assert joined == full.SerializeToString(deterministic=True)
    assert pb.ModelInferRequest.FromString(joined) == full


@settings(max_examples=150, deadline=None)
@given(requests(), raw_contents)
def test_split_raw_inverts_join_raw(message: pb.ModelInferRequest, raws: list[bytes]) -> None:
    head = message.SerializeToString()
    joined = join_raw(head, raws, RAW_INPUT_FIELD)
    rest, found = split_raw(joined, RAW_INPUT_FIELD)
    assert rest == head
    assert [bytes(raw) for raw in found] == raws
    # Other fields are left in place: a different field number finds nothing.
    rest_other, none = split_raw(joined, 15)
    assert rest_other == joined
    assert none == []


def test_split_raw_gives_views_into_the_message() -> None:
    data = join_raw(b"\n\x01m", [b"\x01" * 64, b"\x02" * 8], RAW_INPUT_FIELD)
    rest, raws = split_raw(data, RAW_INPUT_FIELD)
    assert rest == b"\n\x01m"
    everything = np.frombuffer(data, np.uint8)
    for raw in raws:
        assert isinstance(raw, memoryview)
        assert np.shares_memory(np.frombuffer(raw, np.uint8), everything)


def test_split_raw_finds_raw_contents_anywhere_in_the_message() -> None:
    # Protobuf allows fields in any order; a peer may put raw contents first.
    message = pb.ModelInferResponse(model_name="m", id="r")
    message.outputs.add(name="o", datatype="INT8").shape.append(2)
    raw_first = join_raw(b"", [b"\x01\x02"], RAW_OUTPUT_FIELD)
    middle = join_raw(b"", [b""], RAW_OUTPUT_FIELD)
    data = raw_first + pb.ModelInferResponse(model_name="m").SerializeToString()
    data += middle + pb.ModelInferResponse(id="r", outputs=message.outputs).SerializeToString()
    rest, raws = split_raw(data, RAW_OUTPUT_FIELD)
    assert [bytes(raw) for raw in raws] == [b"\x01\x02", b""]
    assert pb.ModelInferResponse.FromString(rest) == message
    assert pb.ModelInferResponse.FromString(data).raw_output_contents == [b"\x01\x02", b""]


def test_split_raw_steps_over_every_wire_type() -> None:
    data = (
        b"\x40\x96\x01"  # field 8, varint 150
        + b"\x49"
        + b"\x00" * 8  # field 9, fixed64
        + b"\x55"
        + b"\x00" * 4  # field 10, fixed32
        + b"\x38\x07"  # field 7 as a varint: not raw contents
        + b"\x3a\x02hi"  # field 7, length-delimited: raw contents
    )
    rest, raws = split_raw(data, RAW_INPUT_FIELD)
    assert [bytes(raw) for raw in raws] == [b"hi"]
    assert rest == data[: -len(b"\x3a\x02hi")]


def test_split_raw_of_a_message_without_raw_contents_returns_it() -> None:
    data = pb.ModelInferRequest(model_name="m").SerializeToString()
    assert split_raw(data, RAW_INPUT_FIELD) == (data, [])
    rest, raws = split_raw(bytearray(data), RAW_INPUT_FIELD)
    assert (rest, raws) == (data, [])
    assert isinstance(rest, bytes)
    assert split_raw(b"", RAW_INPUT_FIELD) == (b"", [])


def test_join_raw_without_raw_contents_is_the_message() -> None:
    head = b"\n\x01m"
    assert join_raw(head, [], RAW_INPUT_FIELD) is head


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x0a", "truncated or malformed protobuf varint"),  # key, then no length
        (b"\x0a\x05abc", "truncated protobuf message"),
        (b"\x3a\x05abc", "truncated protobuf message"),  # raw contents running past the end
        (b"\x3a\xff\xff\xff\xff\x0f", "truncated protobuf message"),  # a 4 GiB claim
        (b"\x49\x00\x00", "truncated protobuf message"),
        (b"\x55\x00", "truncated protobuf message"),
        (b"\x80", "truncated or malformed protobuf varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "truncated or malformed protobuf varint"),
        (b"\x0b", "wire type 3"),  # groups are not in this protocol
        (b"\x0c", "wire type 4"),
        (b"\x0e", "wire type 6"),
        (b"\x0f", "wire type 7"),
    ],
)
def test_split_raw_refuses_malformed_messages(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput) as info:
        split_raw(data, RAW_INPUT_FIELD)
    assert problem in str(info.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_split_raw_of_any_bytes_only_raises_invalid_input(data: bytes) -> None:
    try:
        rest, raws = split_raw(data, RAW_INPUT_FIELD)
    except InvalidInput:
        return
    # Whatever it accepted, joining the pieces back is split the same way again.
    again, raws_again = split_raw(join_raw(rest, raws, RAW_INPUT_FIELD), RAW_INPUT_FIELD)
    assert again == rest
    assert [bytes(r) for r in raws_again] == [bytes(r) for r in raws]
    assert len(rest) + sum(len(r) for r in raws) <= len(data)


# --- tensors of a message, plain values in and out ----------------------------------------


def test_read_tensors_from_typed_contents_or_raw_contents() -> None:
    message = pb.ModelInferRequest()
    typed = message.inputs.add(name="t", datatype="INT32", shape=[2])
    typed.contents.int_contents.extend([1, 2])
    typed.parameters["k"].string_param = "v"
    [fields] = read_tensors(message.inputs, [], "input")
    assert fields == TensorFields("t", [2], "INT32", {"k": "v"}, None, [1, 2])
    bare = pb.ModelInferRequest()
    bare.inputs.add(name="r", datatype="FP16", shape=[1])
    [raw] = read_tensors(bare.inputs, [b"\x00\x3c"], "input")
    assert (raw.name, raw.raw, raw.data, raw.parameters) == ("r", b"\x00\x3c", None, None)


@pytest.mark.parametrize(
    ("datatype", "raws", "contents", "message"),
    [
        ("FP16", [], False, "FP16 travels only as raw contents"),
        ("NOPE", [], False, "unknown datatype 'NOPE'"),
        ("INT32", [b"", b""], False, "2 raw contents for 1 inputs"),
        ("INT32", [b"\x00" * 4], True, "both contents and raw contents"),
    ],
)
def test_read_tensors_refuses(
    datatype: str, raws: list[bytes], contents: bool, message: str
) -> None:
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1])
    if contents:
        tensor.contents.int_contents.append(1)
    with pytest.raises(InvalidInput, match=message):
        list(read_tensors(request.inputs, raws, "input"))


def test_requested_outputs_and_filled_tensors() -> None:
    request = pb.ModelInferRequest()
    request.outputs.add(name="o")
    request.outputs.add(name="p").parameters["binary_data"].bool_param = True
    assert read_requested_outputs(request.outputs) == [("o", None), ("p", {"binary_data": True})]
    response = pb.ModelInferResponse()
    out = response.outputs.add()
    # REST framing never reaches gRPC.
    describe_tensor(out, "b", "BYTES", [2], {"binary_data": True, "k": 1})
    fill_contents(out, "BYTES", "b", np.array([b"a", "\u00e9"], dtype=object))
    assert (out.name, out.datatype, list(out.shape)) == ("b", "BYTES", [2])
    assert dict(out.parameters) == {"k": pb.InferParameter(int64_param=1)}
    assert list(out.contents.bytes_contents) == [b"a", "\u00e9".encode()]
    assert needs_raw(["INT8", "BYTES"]) is False
    assert needs_raw(["INT8", "BF16"]) is True


def test_model_name_read_without_parsing_the_rest() -> None:
    message = pb.ModelInferRequest(model_name="m", id="i").SerializeToString()
    assert string_field(message, pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER) == "m"
    assert string_field(b"", pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER) == ""
    # A repeated singular field: the last one wins, as protobuf reads it.
    renamed = join_raw(message, [b"n"], pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER)
    assert string_field(renamed, pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER) == "n"
    parsed, raws = parse_raw(renamed, RAW_INPUT_FIELD, pb.ModelInferRequest)
    assert (parsed.model_name, parsed.id, raws) == ("n", "i", [])
    with pytest.raises(InvalidInput, match="malformed ModelInferRequest"):
        parse_raw(b"\x0a\x01\xff", RAW_INPUT_FIELD, pb.ModelInferRequest)  # not UTF-8
