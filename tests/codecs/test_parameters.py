"""Parameters between REST JSON values and gRPC `InferParameter` (codecs.parameters)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as triton_pb

from gateway import InvalidInput, to_grpc_parameters, to_http_parameters
from gateway._proto import pb
from gateway.codecs.parameters import fill_grpc_parameters, http_value

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# Every kind of value a parameter can hold, at the edges of each.
param_values = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, UINT64_MAX),
    st.sampled_from([0, -1, INT64_MIN, INT64_MAX, INT64_MAX + 1, UINT64_MAX]),
    st.floats(allow_nan=False),
    st.integers(-(2**53), 2**53).map(float),  # integral floats must stay floats
    st.text(max_size=20),
)
param_dicts = st.dictionaries(st.text(min_size=1, max_size=10), param_values, max_size=6)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "bool_param"),
        (False, "bool_param"),
        (0, "int64_param"),
        (-5, "int64_param"),
        (INT64_MIN, "int64_param"),
        (INT64_MAX, "int64_param"),
        (INT64_MAX + 1, "uint64_param"),
        (UINT64_MAX, "uint64_param"),
        (2.0, "double_param"),
        (-0.5, "double_param"),
        (math.inf, "double_param"),
        ("", "string_param"),
        ("tëxt", "string_param"),
    ],
)
def test_each_value_gets_its_field(value: object, field: str) -> None:
    converted = to_grpc_parameters({"k": value})
    assert isinstance(converted["k"], pb.InferParameter)
    assert converted["k"].WhichOneof("parameter_choice") == field
    back = to_http_parameters(converted)["k"]
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (UINT64_MAX + 1, "does not fit in 64 bits"),
        (INT64_MIN - 1, "does not fit in 64 bits"),
        (None, "a NoneType cannot be sent over gRPC"),
        ([1, 2], "a list cannot be sent over gRPC"),
        ({"a": 1}, "a dict cannot be sent over gRPC"),
        (b"raw", "a bytes cannot be sent over gRPC"),
    ],
)
def test_values_grpc_cannot_carry_are_refused(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput, match=r"^parameter 'key': ") as info:
        to_grpc_parameters({"key": value})
    assert problem in str(info.value)


@settings(max_examples=200, deadline=None)
@given(param_dicts)
def test_rest_to_grpc_to_rest_keeps_values_and_types(params: dict[str, Any]) -> None:
    back = to_http_parameters(to_grpc_parameters(params))
    assert back == params
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in params.items()}


@settings(max_examples=100, deadline=None)
@given(param_dicts)
def test_parameters_survive_a_serialized_message(params: dict[str, Any]) -> None:
    message = pb.ModelInferRequest()
    fill_grpc_parameters(message.parameters, params)
    parsed = pb.ModelInferRequest.FromString(message.SerializeToString())
    back = to_http_parameters(parsed.parameters)
    assert back == params
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in params.items()}


def test_nan_travels_as_a_double() -> None:
    converted = to_grpc_parameters({"n": math.nan})
    assert converted["n"].WhichOneof("parameter_choice") == "double_param"
    assert math.isnan(to_http_parameters(converted)["n"])  # type: ignore[arg-type]


def test_to_http_parameters_reads_a_message_map() -> None:
    message = pb.ModelInferRequest()
    message.parameters["b"].bool_param = True
    message.parameters["i"].int64_param = -3
    message.parameters["u"].uint64_param = UINT64_MAX
    message.parameters["d"].double_param = 2.0
    message.parameters["s"].string_param = "x"
    message.parameters["unset"].Clear()  # no field chosen: nothing to say
    assert to_http_parameters(message.parameters) == {
        "b": True,
        "i": -3,
        "u": UINT64_MAX,
        "d": 2.0,
        "s": "x",
    }
    assert type(to_http_parameters(message.parameters)["d"]) is float


def test_to_http_parameters_passes_plain_values_through() -> None:
    params = {"a": [1, 2], "b": None, "c": 1}
    assert to_http_parameters(params) == params
    assert to_http_parameters({}) == {}


def test_a_grpc_map_converts_both_ways() -> None:
    message = pb.ModelInferRequest()
    message.parameters["x"].int64_param = 7
    converted = to_grpc_parameters(message.parameters)
    assert converted["x"] == message.parameters["x"]
    assert converted["x"] is not message.parameters["x"]


def test_messages_of_other_packages_are_read_by_their_fields() -> None:
    # tritonclient generates its own InferParameter class from the same proto.
    theirs = triton_pb.ModelInferRequest()
    theirs.parameters["seq"].uint64_param = INT64_MAX + 2
    theirs.parameters["flag"].bool_param = False
    theirs.parameters["t"].double_param = 0.25
    expected = {"seq": INT64_MAX + 2, "flag": False, "t": 0.25}
    assert to_http_parameters(theirs.parameters) == expected
    converted = to_grpc_parameters(theirs.parameters)
    assert all(isinstance(p, pb.InferParameter) for p in converted.values())
    assert to_http_parameters(converted) == expected
    assert http_value(theirs.parameters["flag"]) is False
    assert http_value(pb.InferParameter()) is None


def test_our_parameters_parse_as_tritonclient_parameters() -> None:
    message = pb.ModelInferRequest()
    fill_grpc_parameters(message.parameters, {"big": UINT64_MAX, "f": 3.0, "s": "é", "b": True})
    theirs = triton_pb.ModelInferRequest.FromString(message.SerializeToString())
    assert theirs.parameters["big"].uint64_param == UINT64_MAX
    assert theirs.parameters["f"].double_param == 3.0
    assert theirs.parameters["s"].string_param == "é"
    assert theirs.parameters["b"].bool_param is True
