"""The gRPC server under hostile messages: fields that contradict each other (raw contents
against inputs, contents and raw together, datatypes against contents), absurd shapes,
damaged wire bytes (cut, flipped, varints that never end, lengths past the end), every
method with garbage, and metadata and ids of any text.

The property: a code that blames the request (INVALID_ARGUMENT, NOT_FOUND, ...), never one
that says the server failed; and the server serves a good request right after.
"""

from __future__ import annotations

from typing import Any

import grpc
from hypothesis import assume, example, given
from hypothesis import strategies as st

from gateway._proto import pb
from gateway.server.grpc import SERVICE
from tests.security.harness import RELAYS, Gateway, LogCapture, check_code, fuzzing
from tests.security.strategies import DATATYPES, datatypes, header_text, shapes

CONTENTS = {
    "bool_contents": st.lists(st.booleans(), max_size=4),
    "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
    "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    "uint_contents": st.lists(st.integers(0, 2**32 - 1), max_size=4),
    "uint64_contents": st.lists(st.integers(0, 2**64 - 1), max_size=4),
    "fp32_contents": st.lists(st.floats(width=32), max_size=4),
    "fp64_contents": st.lists(st.floats(), max_size=4),
    "bytes_contents": st.lists(st.binary(max_size=6), max_size=4),
}

parameter_values = st.one_of(
    st.builds(lambda v: pb.InferParameter(bool_param=v), st.booleans()),
    st.builds(lambda v: pb.InferParameter(int64_param=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: pb.InferParameter(uint64_param=v), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: pb.InferParameter(double_param=v), st.floats()),
    st.builds(lambda v: pb.InferParameter(string_param=v), st.text(max_size=8)),
    st.just(pb.InferParameter()),  # no value at all
)
parameters = st.dictionaries(st.text(max_size=6), parameter_values, max_size=3)


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A ModelInferRequest whose fields may disagree with each other in every way."""
    message = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["echo", "headers", "nothere"]) | st.text(max_size=6)),
        model_version=draw(st.sampled_from(["", "1"]) | st.text(max_size=3)),
        id=draw(st.text(max_size=10)),
    )
    for key, value in draw(parameters).items():
        message.parameters[key].CopyFrom(value)
    count = draw(st.integers(0, 3))
    for _ in range(count):
        tensor = message.inputs.add(
            name=draw(st.text(max_size=4)),
            datatype=draw(datatypes),
            shape=[max(-(2**63), min(d, 2**63 - 1)) for d in draw(shapes)],
        )
        for key, value in draw(parameters).items():
            tensor.parameters[key].CopyFrom(value)
        for field in draw(st.lists(st.sampled_from(sorted(CONTENTS)), max_size=2, unique=True)):
            getattr(tensor.contents, field).extend(draw(CONTENTS[field]))
    # Raw contents: none, one per input, or a count that does not match.
    raws = draw(st.sampled_from(["none", "match", "fewer", "more"]))
    if raws != "none":
        wanted = {"match": count, "fewer": max(count - 1, 0), "more": count + 1}[raws]
        message.raw_input_contents.extend(
            draw(st.lists(st.binary(max_size=24), min_size=wanted, max_size=wanted))
        )
    for name in draw(st.lists(st.text(max_size=3), max_size=2)):
        message.outputs.add(name=name)
    return message


@fuzzing(3)
@given(infer_requests())
@example(
    pb.ModelInferRequest(
        model_name="echo",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2**40])],
        raw_input_contents=[b"\x00" * 4],
    )
)
def test_model_infer_with_inconsistent_fields(
    gateway: Gateway, logs: LogCapture, message: pb.ModelInferRequest
) -> None:
    code, details, _ = gateway.grpc_call("ModelInfer", message.SerializeToString())
    check_code(code, details)
    gateway.assert_grpc_serving()
    logs.assert_no_forged_lines()


def good_message() -> bytes:
    message = pb.ModelInferRequest(model_name="echo", id="r")
    message.parameters["p"].string_param = "v"
    message.inputs.add(name="h", datatype="FP16", shape=[2])
    message.inputs.add(name="s", datatype="BYTES", shape=[1])
    message.raw_input_contents.extend([b"\x00\x3c\x00\x3c", b"\x02\x00\x00\x00ok"])
    message.outputs.add(name="h")
    return message.SerializeToString()


GOOD = good_message()

# Wire fragments that no serializer writes: a varint that never ends, a length far past the
# end, groups and the reserved wire types, a field number 0.
WIRE_JUNK = [
    b"\x08" + b"\xff" * 11,
    b"\x3a\xff\xff\xff\xff\x0f",
    b"\x3a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x0b\x0c",
    b"\x0e",
    b"\x0f",
    b"\x00\x00",
    b"\x2a\x05\x0a\x03abc",
    b"\x2a\x02\x1a\xff",
]


@fuzzing(4)
@given(st.data())
def test_model_infer_with_damaged_wire_bytes(gateway: Gateway, data: st.DataObject) -> None:
    wire = bytearray(GOOD)
    for _ in range(data.draw(st.integers(0, 3))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    at = data.draw(st.integers(0, len(wire)))
    insert = data.draw(st.sampled_from([b"", *WIRE_JUNK]) | st.binary(max_size=8))
    wire[at:at] = insert
    cut = data.draw(st.integers(0, len(wire)))
    code, details, _ = gateway.grpc_call("ModelInfer", bytes(wire[:cut]))
    check_code(code, details)
    gateway.assert_grpc_serving()


METHODS = sorted(method.name for method in SERVICE.methods)


@fuzzing(2)
@given(
    st.sampled_from(METHODS),
    st.binary(max_size=64) | st.sampled_from(WIRE_JUNK) | st.just(GOOD[: len(GOOD) // 2]),
)
def test_every_method_with_garbage(gateway: Gateway, method: str, data: bytes) -> None:
    if method == "RepositoryModelUnload":
        try:
            unloaded = pb.RepositoryModelUnloadRequest.FromString(data).model_name
        except Exception:
            unloaded = ""
        assume(unloaded not in ("echo", "headers"))  # the other tests need them
    code, details, _ = gateway.grpc_call(method, data)
    check_code(code, details)
    gateway.assert_grpc_serving()


metadata_keys = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,14}", fullmatch=True).filter(
    lambda k: not k.startswith("grpc-") and not k.endswith("-bin")
)
metadata_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@fuzzing(2)
@given(
    st.dictionaries(metadata_keys, metadata_values, max_size=4),
    st.none() | metadata_values,
    st.text(max_size=300),
    st.sampled_from(["echo", "nothere", "boom"]),
)
@example({}, None, "a\r\nx-evil: 1", "echo")
@example({}, None, "\u00e9\x00", "nothere")
@example({}, None, "x" * 300, "boom")
def test_metadata_and_ids_of_any_text(
    gateway: Gateway,
    metadata: dict[str, str],
    request_id: str | None,
    message_id: str,
    model: str,
) -> None:
    sent = [(k, v) for k, v in metadata.items() if k not in ("x-request-id", "te", "host")]
    if request_id is not None:
        sent.append(("x-request-id", request_id))
    message = pb.ModelInferRequest(model_name=model, id=message_id)
    code, details, received = gateway.grpc_call("ModelInfer", message.SerializeToString(), sent)
    if model == "boom":  # a bug in the model: INTERNAL, with nothing of the bug's text
        assert code is grpc.StatusCode.INTERNAL
        assert details == "internal error: RuntimeError"
    else:
        check_code(code, details)
    # The request id the server reports is valid metadata, whatever the message's id held.
    ids = [value for key, value in received if key == "x-request-id"]
    assert ids, received
    if request_id:
        assert set(ids) == {request_id.strip()} or set(ids) == {request_id}
    for value in ids:
        assert value.isascii()
        assert value.isprintable()
    gateway.assert_grpc_serving()


@fuzzing(2)
@given(st.dictionaries(header_text, header_text, max_size=4), st.sampled_from(DATATYPES))
def test_response_metadata_a_model_sets(
    gateway: Gateway, headers: dict[str, str], datatype: str
) -> None:
    """Response headers a model sets go out only when gRPC can carry them; the rest are
    dropped, never failing the call."""
    message = pb.ModelInferRequest(model_name="headers")
    for key, value in headers.items():
        message.parameters[key].string_param = value
    code, details, received = gateway.grpc_call("ModelInfer", message.SerializeToString())
    assert code is grpc.StatusCode.OK, (code, details)
    sent: dict[str, Any] = {k.lower(): v for k, v in headers.items()}
    for key, value in received:
        if key in sent and key not in ("x-request-id", "server-timing"):
            assert value == sent[key]
    gateway.assert_grpc_serving()


@fuzzing(3)
@given(
    infer_requests(),
    st.sampled_from(sorted(RELAYS)),
    st.dictionaries(st.sampled_from(["x-request-id", "traceparent", "baggage"]), metadata_values),
)
def test_model_infer_through_a_hop(
    gateway: Gateway, message: pb.ModelInferRequest, model: str, metadata: dict[str, str]
) -> None:
    """The same messages, forwarded to a predictor in each protocol (passed through untouched
    to gRPC, converted to REST v2 and v1)."""
    message.model_name = model
    code, details, _ = gateway.grpc_call(
        "ModelInfer", message.SerializeToString(), list(metadata.items())
    )
    check_code(code, details)
    gateway.assert_grpc_serving()
