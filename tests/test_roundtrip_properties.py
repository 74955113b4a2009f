"""Property tests: every datatype and shape survives every wire form, and chains of them.

A tensor goes through JSON (v2 REST), the binary extension, and gRPC (protobuf messages and
the serialized-bytes variants), as request inputs and as response outputs, and must come back
with the same numbers and strings: bit for bit where the wire form carries bits. JSON cannot
carry NaN, infinity or non-UTF-8 bytes; it must refuse them, naming the tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient import utils as triton_utils
from tritonclient.grpc import service_pb2 as triton_pb

from gateway import InferInput, InferOutput, InferRequest, InferResponse, InvalidInput
from gateway._proto import pb
from gateway.codecs.rest import REST_ONLY

Array = np.ndarray[Any, Any]

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
FLOATS = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
INTS = {
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}

# Small, with empty dims and scalars.
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
names = st.text(min_size=1, max_size=8)


def bf16_values(bits: Array) -> Array:
    """The float32 values of BF16 bit patterns (the high half of a float32)."""
    return np.asarray(bits.astype("<u4") << 16).view("<f4")


def arrays(datatype: str, shape: tuple[int, ...], json_safe: bool) -> st.SearchStrategy[Array]:
    """Values of `datatype` that the datatype holds exactly; finite UTF-8 when `json_safe`."""
    if datatype == "BOOL":
        return hnp.arrays(np.bool_, shape)
    if datatype in INTS:
        return hnp.arrays(INTS[datatype], shape)
    if datatype in FLOATS:
        dtype = np.dtype(FLOATS[datatype])
        width = dtype.itemsize * 8
        floats = st.floats(width=width, allow_nan=not json_safe, allow_infinity=not json_safe)
        return hnp.arrays(dtype, shape, elements=floats)
    if datatype == "BF16":
        bits = st.integers(0, 0xFFFF)
        if json_safe:
            bits = bits.filter(lambda b: b & 0x7F80 != 0x7F80)  # no NaN, no infinity
        return hnp.arrays(np.uint16, shape, elements=bits).map(bf16_values)
    text = st.text(max_size=6).map(str.encode)
    elements = text if json_safe else text | st.binary(max_size=6)
    return hnp.arrays(np.object_, shape, elements=elements)


@st.composite
def tensors(
    draw: st.DrawFn, datatype: str | None = None, json_safe: bool | None = None
) -> tuple[str, Array]:
    datatype = datatype or draw(st.sampled_from(DATATYPES))
    safe = draw(st.booleans()) if json_safe is None else json_safe
    return datatype, draw(arrays(datatype, draw(shapes), safe))


def is_json_safe(datatype: str, array: Array) -> bool:
    if datatype == "BYTES":
        try:
            for element in array.ravel():
                element.decode()
        except UnicodeDecodeError:
            return False
        return True
    if datatype in FLOATS or datatype == "BF16":
        return bool(np.isfinite(array).all())
    return True


def assert_same(got: Array, expected: Array, datatype: str) -> None:
    """Same shape, dtype and values; floats bit for bit, except NaN payloads."""
    assert got.shape == expected.shape
    if datatype == "BYTES":
        assert got.dtype == np.object_
        assert got.tolist() == expected.tolist()
        assert all(type(v) is bytes for v in got.ravel())
        return
    dtype = np.float32 if datatype == "BF16" else expected.dtype
    assert got.dtype == dtype
    if datatype in FLOATS or datatype == "BF16":
        nan = np.isnan(expected)
        assert (np.isnan(got) == nan).all()
        # Compares -0.0 and 0.0 as different, as the bits are.
        assert got[~nan].tobytes() == expected[~nan].astype(dtype).tobytes()
    else:
        assert np.array_equal(got, expected)


def make_inputs(specs: list[tuple[str, str, Array]], binary: bool) -> list[InferInput]:
    inputs = []
    for name, datatype, array in specs:
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def make_outputs(specs: list[tuple[str, str, Array]]) -> list[InferOutput]:
    outputs = []
    for name, datatype, array in specs:
        tensor = InferOutput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        outputs.append(tensor)
    return outputs


# --- hops: each sends a request or response one way and reads it back -----------------------


def _json_roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    # The stdlib checks that `to_rest` gave plain JSON values.
    parsed: dict[str, Any] = json.loads(json.dumps(body, allow_nan=False))
    return parsed


def req_rest_json(request: InferRequest) -> InferRequest:
    body, length = request.rest_body(binary=False)
    assert length is None
    return InferRequest.from_bytes(body, None, request.model_name)


def req_rest_binary(request: InferRequest) -> InferRequest:
    body, length = request.rest_body(binary=True)
    return InferRequest.from_bytes(body, length, request.model_name)


def req_to_rest(request: InferRequest) -> InferRequest:
    """The public `to_rest`: each input as it arrived or was set."""
    body, length = request.to_rest()
    if isinstance(body, dict):
        assert length is None
        return InferRequest.from_inference_request(_json_roundtrip(body), request.model_name)
    assert length is not None
    return InferRequest.from_bytes(body, length, request.model_name)


def req_grpc(request: InferRequest) -> InferRequest:
    data = request.to_grpc().SerializeToString()
    return InferRequest.from_grpc(pb.ModelInferRequest.FromString(data))


def req_grpc_bytes(request: InferRequest) -> InferRequest:
    return InferRequest.from_grpc_bytes(request.to_grpc_bytes())


def _resend(response: InferResponse, binary: bool) -> InferResponse:
    return InferResponse(
        response.id,
        response.model_name,
        response.outputs,
        model_version=response.model_version,
        parameters=response.parameters,
        use_binary_outputs=binary,
    )


def res_rest_json(response: InferResponse) -> InferResponse:
    body, length = _resend(response, False).to_rest()
    assert isinstance(body, dict)
    assert length is None
    return InferResponse.from_rest(_json_roundtrip(body))


def res_rest_binary(response: InferResponse) -> InferResponse:
    body, length = _resend(response, True).to_rest()
    if not response.outputs:
        assert isinstance(body, dict)
        return InferResponse.from_rest(body)
    assert isinstance(body, bytes)
    return InferResponse.from_bytes(body, length)


def res_grpc_typed(response: InferResponse) -> InferResponse:
    message = _resend(response, False).to_grpc()
    return InferResponse.from_grpc(pb.ModelInferResponse.FromString(message.SerializeToString()))


def res_grpc_raw(response: InferResponse) -> InferResponse:
    return InferResponse.from_grpc_bytes(_resend(response, True).to_grpc_bytes())


REQUEST_HOPS: dict[str, Callable[[InferRequest], InferRequest]] = {
    "json": req_rest_json,
    "binary": req_rest_binary,
    "to_rest": req_to_rest,
    "grpc": req_grpc,
    "grpc_bytes": req_grpc_bytes,
}
RESPONSE_HOPS: dict[str, Callable[[InferResponse], InferResponse]] = {
    "json": res_rest_json,
    "binary": res_rest_binary,
    "grpc_typed": res_grpc_typed,
    "grpc_raw": res_grpc_raw,
}
# Hops that put every tensor in JSON, so need JSON-safe data.
JSON_HOPS = {"json"}


def request_chains(json_safe: bool) -> st.SearchStrategy[list[str]]:
    hops = sorted(REQUEST_HOPS if json_safe else set(REQUEST_HOPS) - JSON_HOPS)
    return st.lists(st.sampled_from(hops), min_size=1, max_size=4)


def response_chains(json_safe: bool) -> st.SearchStrategy[list[str]]:
    hops = sorted(RESPONSE_HOPS if json_safe else set(RESPONSE_HOPS) - JSON_HOPS)
    return st.lists(st.sampled_from(hops), min_size=1, max_size=4)


def check_request(request: InferRequest, specs: list[tuple[str, str, Array]]) -> None:
    assert [(t.name, t.datatype) for t in request.inputs] == [(n, d) for n, d, _ in specs]
    for tensor, (_, datatype, array) in zip(request.inputs, specs, strict=True):
        assert tensor.shape == list(array.shape)
        assert_same(tensor.as_numpy(), array, datatype)


def check_response(response: InferResponse, specs: list[tuple[str, str, Array]]) -> None:
    assert [(t.name, t.datatype) for t in response.outputs] == [(n, d) for n, d, _ in specs]
    for tensor, (_, datatype, array) in zip(response.outputs, specs, strict=True):
        assert tensor.shape == list(array.shape)
        assert_same(tensor.as_numpy(), array, datatype)


# --- every datatype, every hop, and chains of hops ------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_request_inputs_survive_chains_of_hops(datatype: str, data: st.DataObject) -> None:
    safe = data.draw(st.booleans(), label="json_safe")
    _, array = data.draw(tensors(datatype, safe), label="array")
    safe = is_json_safe(datatype, array)
    chain = data.draw(request_chains(safe), label="chain")
    spec = [("x", datatype, array)]
    binary = data.draw(st.booleans(), label="binary") if safe else True
    request = InferRequest("m", make_inputs(spec, binary), request_id="r", parameters={"p": 1})
    for hop in chain:
        request = REQUEST_HOPS[hop](request)
        check_request(request, spec)
        assert request.id == "r"
        assert {k: v for k, v in (request.parameters or {}).items() if k not in REST_ONLY} == {
            "p": 1
        }


@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_response_outputs_survive_chains_of_hops(datatype: str, data: st.DataObject) -> None:
    safe = data.draw(st.booleans(), label="json_safe")
    _, array = data.draw(tensors(datatype, safe), label="array")
    chain = data.draw(response_chains(is_json_safe(datatype, array)), label="chain")
    spec = [("y", datatype, array)]
    response = InferResponse("r", "m", make_outputs(spec), model_version="7")
    for hop in chain:
        response = RESPONSE_HOPS[hop](response)
        check_response(response, spec)
        assert (response.id, response.model_name, response.model_version) == ("r", "m", "7")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(names, tensors(json_safe=True)), max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_mixed_request_goes_json_grpc_binary_json(
    items: list[tuple[str, tuple[str, Array]]], binary: list[bool]
) -> None:
    specs = [(name, datatype, array) for name, (datatype, array) in items]
    inputs = [make_inputs([spec], flag)[0] for spec, flag in zip(specs, binary, strict=False)]
    request = req_rest_json(InferRequest("m", inputs))
    for hop in (req_grpc, req_rest_binary, req_grpc_bytes, req_to_rest, req_rest_json):
        request = hop(request)
        check_request(request, specs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(names, tensors()), max_size=4))
def test_mixed_response_goes_through_every_form(items: list[tuple[str, tuple[str, Array]]]) -> None:
    specs = [(name, datatype, array) for name, (datatype, array) in items]
    response = InferResponse("r", "m", make_outputs(specs))
    safe = all(is_json_safe(datatype, array) for _, datatype, array in specs)
    hops = ["grpc_raw", "binary", "grpc_typed", "json", "grpc_raw"]
    for hop in hops if safe else [h for h in hops if h not in JSON_HOPS]:
        response = RESPONSE_HOPS[hop](response)
        check_response(response, specs)


@settings(max_examples=60, deadline=None)
@given(tensors(), st.booleans())
def test_wire_bytes_variants_match_protobuf(tensor: tuple[str, Array], raw: bool) -> None:
    datatype, array = tensor
    request = InferRequest("m", make_inputs([("x", datatype, array)], True), request_id="r")
    assert pb.ModelInferRequest.FromString(request.to_grpc_bytes()) == request.to_grpc()
    response = InferResponse(
        "r", "m", make_outputs([("y", datatype, array)]), use_binary_outputs=raw
    )
    assert pb.ModelInferResponse.FromString(response.to_grpc_bytes()) == response.to_grpc()


# --- what JSON cannot carry -----------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_refuses_nan_and_infinity(datatype: str, value: float) -> None:
    dtype = np.float32 if datatype == "BF16" else FLOATS[datatype]
    array = np.array([1.0, value], dtype=dtype)
    request = InferRequest("m", make_inputs([("the_floats", datatype, array)], True))
    with pytest.raises(InvalidInput, match=r"tensor 'the_floats': holds NaN or infinity"):
        request.rest_body(binary=False)
    response = InferResponse("r", "m", make_outputs([("out_floats", datatype, array)]))
    with pytest.raises(InvalidInput, match=r"tensor 'out_floats': holds NaN or infinity"):
        response.to_rest()
    # Binary and gRPC carry them.
    check_request(req_rest_binary(request), [("the_floats", datatype, array)])
    check_response(res_grpc_raw(response), [("out_floats", datatype, array)])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.object_, hnp.array_shapes(min_dims=1, max_dims=2), elements=st.binary()),
    st.binary(min_size=1).filter(lambda b: not _utf8(b)),
)
def test_json_refuses_non_utf8_bytes(array: Array, bad: bytes) -> None:
    array.flat[0] = bad
    spec = [("blob", "BYTES", array)]
    request = InferRequest("m", make_inputs(spec, True))
    with pytest.raises(InvalidInput, match=r"tensor 'blob': BYTES element is not UTF-8"):
        request.rest_body(binary=False)
    response = InferResponse("r", "m", make_outputs(spec))
    with pytest.raises(InvalidInput, match=r"tensor 'blob': BYTES element is not UTF-8"):
        response.to_rest()
    with pytest.raises(InvalidInput, match=r"tensor 'blob'"):
        response.outputs[0].as_string()
    for hop in (req_rest_binary, req_grpc, req_grpc_bytes, req_to_rest):
        check_request(hop(request), spec)
    for res_hop in (res_rest_binary, res_grpc_raw, res_grpc_typed):
        check_response(res_hop(response), spec)


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# --- parameters -----------------------------------------------------------------------------

param_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**63, 2**64 - 1, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**40), 2**40).map(float),
    st.text(max_size=8),
)
param_dicts = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: k not in REST_ONLY), param_values, max_size=5
)


def _typed(params: dict[str, Any] | None) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k, v in (params or {}).items() if k not in REST_ONLY}


@settings(max_examples=100, deadline=None)
@given(param_dicts, param_dicts, st.lists(st.sampled_from(sorted(REQUEST_HOPS)), max_size=4))
def test_request_parameters_survive_rest_and_grpc(
    params: dict[str, Any], tensor_params: dict[str, Any], chain: list[str]
) -> None:
    tensor = InferInput("x", [1], "INT8", data=[1], parameters=tensor_params)
    request = InferRequest("m", [tensor], parameters=params)
    for hop in [*chain, "grpc", "json", "grpc_bytes", "binary"]:
        request = REQUEST_HOPS[hop](request)
        assert _typed(request.parameters) == _typed(params)
        assert _typed(request.inputs[0].parameters) == _typed(tensor_params)


@settings(max_examples=100, deadline=None)
@given(param_dicts, param_dicts, st.lists(st.sampled_from(sorted(RESPONSE_HOPS)), max_size=4))
def test_response_parameters_survive_rest_and_grpc(
    params: dict[str, Any], tensor_params: dict[str, Any], chain: list[str]
) -> None:
    output = InferOutput("y", [1], "FP64", data=[0.5], parameters=tensor_params)
    response = InferResponse("r", "m", [output], parameters=params)
    for hop in [*chain, "grpc_typed", "json", "grpc_raw", "binary"]:
        response = RESPONSE_HOPS[hop](response)
        assert _typed(response.parameters) == _typed(params)
        assert _typed(response.outputs[0].parameters) == _typed(tensor_params)


# --- tritonclient reads ours, and we read tritonclient's ------------------------------------

# tritonclient holds BF16 as ml_dtypes.bfloat16; ours is float32 (BF16 widened exactly).
# Every interop property also runs this BF16 tensor, whatever hypothesis draws: zeros of both
# signs, a subnormal, the largest finite, the infinities and a NaN (JSON: binary then).
BF16_EDGES = [
    ("bf", ("BF16", bf16_values(np.array([0, 0x8000, 0x0001, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0]))))
]


def _to_triton(datatype: str, array: Array) -> Array:
    """Our array as tritonclient holds that datatype."""
    return array.astype(ml_dtypes.bfloat16) if datatype == "BF16" else array


def _from_triton(datatype: str, array: Array) -> Array:
    """A tritonclient array as we hold that datatype."""
    return array.astype(np.float32) if datatype == "BF16" else array


def _triton_array(datatype: str, raw: bytes, shape: list[int]) -> Array:
    if datatype == "BYTES":
        return triton_utils.deserialize_bytes_tensor(raw).reshape(shape)
    dtype = np.dtype(triton_utils.triton_to_np_dtype(datatype)).newbyteorder("<")
    return _from_triton(datatype, np.frombuffer(raw, dtype=dtype).reshape(shape))


def _triton_raw(datatype: str, array: Array) -> bytes:
    if datatype == "BYTES":
        return b"" if array.size == 0 else triton_utils.serialize_byte_tensor(array).item()
    dtype = np.dtype(triton_utils.triton_to_np_dtype(datatype)).newbyteorder("<")
    return _to_triton(datatype, array).astype(dtype).tobytes()


@settings(max_examples=100, deadline=None)
@example(BF16_EDGES, False)
@given(st.lists(st.tuples(names, tensors()), max_size=3), st.booleans())
def test_tritonclient_parses_our_grpc_request(
    items: list[tuple[str, tuple[str, Array]]], binary: bool
) -> None:
    specs = [(name, dt, array) for name, (dt, array) in items]
    # JSON-set data goes raw over gRPC too; JSON cannot hold what is not JSON-safe.
    binary = binary or not all(is_json_safe(dt, array) for _, dt, array in specs)
    request = InferRequest(
        "m", make_inputs(specs, binary), request_id="r", parameters={"u": 2**64 - 1}
    )
    theirs = triton_pb.ModelInferRequest.FromString(request.to_grpc_bytes())
    assert (theirs.model_name, theirs.id) == ("m", "r")
    assert theirs.parameters["u"].uint64_param == 2**64 - 1
    assert len(theirs.raw_input_contents) == len(specs)
    for message, raw, (name, datatype, array) in zip(
        theirs.inputs, theirs.raw_input_contents, specs, strict=True
    ):
        assert (message.name, message.datatype, list(message.shape)) == (
            name,
            datatype,
            list(array.shape),
        )
        assert_same(_triton_array(datatype, raw, list(array.shape)), array, datatype)


@settings(max_examples=100, deadline=None)
@example(BF16_EDGES)
@given(st.lists(st.tuples(names, tensors()), max_size=3))
def test_we_parse_a_tritonclient_grpc_request(items: list[tuple[str, tuple[str, Array]]]) -> None:
    specs = [(name, dt, array) for name, (dt, array) in items]
    theirs = triton_pb.ModelInferRequest(model_name="m", id="r")
    theirs.parameters["f"].double_param = 2.0
    for name, datatype, array in specs:
        theirs.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        theirs.raw_input_contents.append(_triton_raw(datatype, array))
    for request in (
        InferRequest.from_grpc(theirs),
        InferRequest.from_grpc_bytes(theirs.SerializeToString()),
    ):
        assert (request.model_name, request.id) == ("m", "r")
        assert request.parameters == {"f": 2.0}
        assert type(request.parameters["f"]) is float
        check_request(request, specs)


@settings(max_examples=50, deadline=None)
@example(BF16_EDGES)
@given(st.lists(st.tuples(names, tensors()), min_size=1, max_size=3))
def test_tritonclient_reads_our_raw_grpc_response(
    items: list[tuple[str, tuple[str, Array]]],
) -> None:
    specs = [(f"{i}{name}", dt, a) for i, (name, (dt, a)) in enumerate(items)]
    response = InferResponse("r", "m", make_outputs(specs), use_binary_outputs=True)
    result = triton_grpc.InferResult(
        triton_pb.ModelInferResponse.FromString(response.to_grpc_bytes())
    )
    for name, datatype, array in specs:
        assert_same(_from_triton(datatype, result.as_numpy(name)), array, datatype)


@settings(max_examples=50, deadline=None)
@example(BF16_EDGES, True)
@given(st.lists(st.tuples(names, tensors()), min_size=1, max_size=3), st.booleans())
def test_tritonclient_reads_our_rest_response(
    items: list[tuple[str, tuple[str, Array]]], binary: bool
) -> None:
    specs = [(f"{i}{name}", dt, a) for i, (name, (dt, a)) in enumerate(items)]
    if not binary and not all(is_json_safe(dt, a) for _, dt, a in specs):
        binary = True
    response = InferResponse("r", "m", make_outputs(specs), use_binary_outputs=binary)
    body, length = response.to_rest()
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    result = triton_http.InferResult.from_response_body(body, header_length=length)
    assert result.get_response()["id"] == "r"
    for name, datatype, array in specs:
        got = result.as_numpy(name)
        if datatype == "BYTES" and not binary:
            # tritonclient keeps JSON strings as str.
            assert got.tolist() == np.vectorize(bytes.decode, otypes=[object])(array).tolist()
        else:
            assert_same(_from_triton(datatype, got.reshape(array.shape)), array, datatype)


@settings(max_examples=50, deadline=None)
@example(BF16_EDGES, True)
@given(st.lists(st.tuples(names, tensors()), max_size=3), st.booleans())
def test_we_read_a_tritonclient_rest_request(
    items: list[tuple[str, tuple[str, Array]]], binary: bool
) -> None:
    specs = [(name, dt, a) for name, (dt, a) in items]
    # tritonclient sends BF16 as binary data only.
    json_safe = all(is_json_safe(dt, a) and dt != "BF16" for _, dt, a in specs)
    binary = binary or not json_safe
    inputs = []
    for name, datatype, array in specs:
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(_to_triton(datatype, array), binary_data=binary)
        inputs.append(tensor)
    outputs = [triton_http.InferRequestedOutput("out", binary_data=binary)]
    body, length = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="r", parameters={"k": 3}
    )
    request = InferRequest.from_bytes(body, length, "m")
    assert request.id == "r"
    assert request.parameters == {"k": 3}
    assert request.request_outputs is not None
    assert request.request_outputs[0].binary_data is binary
    check_request(request, specs)
