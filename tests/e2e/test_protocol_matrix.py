"""Every client protocol through ``gateway serve`` to every predictor protocol, as processes.

    client (aiohttp / tritonclient) --> gateway serve (identity, or --transformer) --> predictor
    REST v1, REST v2 JSON,              python -m gateway serve                      tests.apps.
    REST v2 binary, gRPC v2             --predictor_protocol v1 | v2 | grpc-v2       kserve_style

Every datatype the pair can carry round-trips exactly, and the answer comes back in the
client's own form: JSON data for JSON, binary data when the client asked binary, gRPC raw
contents when it sent raw. What each pair carries, and what it refuses:

=================  ==========================  ==========================================
client -> pred.    carries                     refused (client sees)
=================  ==========================  ==========================================
v1 -> v1           any JSON (pass-through)     -
v1 -> v2, grpc-v2  regular arrays of numbers,  ragged instances: 400 "... is not a regular
                   bools or strings, or rows   array"; null / objects: 400 "... holds
                   of such ({"a": .., ..});    values with no tensor datatype"; rows with
                   ints stay ints (INT64, or   different keys: 400 "rows do not all have
                   UINT64 above 2**63 - 1),    the same keys"; strings mixed with other
                   floats FP64, str BYTES;     values: 400 "... mixes strings with other
                   bools among numbers are     values"; integers no one of INT64 / UINT64
                   numbers (numpy's reading)   holds: 400 "... holds integers that fit
                                               neither INT64 nor UINT64"
v2 -> v2,          every datatype (BF16 and    -
grpc -> grpc-v2    non-UTF-8 BYTES binary /
                   gRPC only: JSON has none)
v2 -> grpc-v2,     every datatype; the answer  -
grpc -> v2         in the client's form
v2, grpc -> v1     every datatype's values,    tensors without a shared first dimension:
                   but v1 has no datatypes or  400 / INVALID_ARGUMENT "tensors a, b do
                   names: floats come back     not share a first dimension, so they have
                   FP64, ints INT64 (UINT64    no v1 form"; BYTES that are not UTF-8:
                   above 2**63 - 1), one       400 / INVALID_ARGUMENT "... BYTES that are
                   tensor as "input-0"; more   not UTF-8 have no v1 (JSON) form"
                   keep their names (v1 rows)
=================  ==========================  ==========================================

tritonclient itself cannot send BF16 as JSON (it refuses before sending); the gateway
accepts it, which `test_bf16_as_json` checks with a hand-written body.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway._proto import pb
from tests.e2e.doubling_transformer import SAW
from tests.e2e.support import (
    MODEL,
    PROTOCOLS,
    InThread,
    gateway_command,
    grpc_infer,
    host,
    start_servers,
)
from tests.hops.upstreams import DATATYPES
from tests.hops.upstreams import array as typed_array
from tests.server.procs import ServerProcess

TRANSFORMER = "tests/e2e/doubling_transformer.py:Doubler"
V2_CLIENTS = ("rest-v2-json", "rest-v2-binary", "grpc")
CLIENTS = ("rest-v1", *V2_CLIENTS)
NON_UTF8 = np.array([[b"\xff\xfe", b"\x00"], [b"\xc3(", b"ok"]], dtype=np.object_)
BF16_VALUES = [[1.5, -2.0], [0.0078125, 3.3895313892515355e38]]  # exact in BF16
# What v1 (JSON without datatypes) turns each datatype into on the way back.
VIA_V1 = {"BOOL": "BOOL", "BYTES": "BYTES", "UINT64": "UINT64", "FP16": "FP64",
          "FP32": "FP64", "FP64": "FP64", "BF16": "FP64"}  # fmt: skip
TYPED_FIELD = {"FP64": "fp64_contents"}  # where FP32 data is once v1 made it FP64


@dataclass(frozen=True)
class Gateways:
    identity: dict[str, ServerProcess]
    doubler: dict[str, ServerProcess]


@pytest.fixture(scope="module")
def gateways(predictor: ServerProcess) -> Iterator[Gateways]:
    """For each predictor protocol, an identity gateway and one running `Doubler`."""
    commands = [gateway_command(host(predictor, p), p) for p in PROTOCOLS]
    commands += [
        gateway_command(host(predictor, p), p, "--transformer", TRANSFORMER) for p in PROTOCOLS
    ]
    with ExitStack() as stack:
        servers = start_servers(stack, *commands)
        identity = dict(zip(PROTOCOLS, servers[:3], strict=True))
        yield Gateways(identity, dict(zip(PROTOCOLS, servers[3:], strict=True)))


# Requests and answers


def client_array(datatype: str) -> np.ndarray[Any, Any]:
    """Two rows of `datatype`, as tritonclient takes them (BF16 as ml_dtypes.bfloat16)."""
    if datatype == "BF16":
        return np.array(BF16_VALUES, dtype=ml_dtypes.bfloat16)
    return typed_array(datatype)


def tensors(client: str, non_utf8: bool = False) -> dict[str, tuple[str, np.ndarray[Any, Any]]]:
    """name -> (datatype, values): every datatype `client` can send, all [2, 2]."""
    chosen = {dt.lower(): (dt, client_array(dt)) for dt in DATATYPES}
    if client == "rest-v2-json":
        del chosen["bf16"]  # tritonclient refuses BF16 as JSON
    if non_utf8:
        chosen["raw_bytes"] = ("BYTES", NON_UTF8)
    return chosen


def expected_datatype(datatype: str, predictor: str) -> str:
    return VIA_V1.get(datatype, "INT64") if predictor == "v1" else datatype


def values(array: np.ndarray[Any, Any]) -> list[Any]:
    """Flat values to compare exactly: Python ints, floats widened exactly, BYTES as bytes."""
    if array.dtype == np.object_:
        return [item.encode() if isinstance(item, str) else bytes(item) for item in array.flat]
    if array.dtype.kind == "f" or array.dtype == ml_dtypes.bfloat16:
        floats: list[Any] = np.asarray(array, dtype=np.float64).ravel().tolist()
        return floats
    exact: list[Any] = array.ravel().tolist()
    return exact


async def infer(
    client: str, address: str, sent: dict[str, tuple[str, np.ndarray[Any, Any]]]
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, str], Any]:
    """Send `sent` with tritonclient; the outputs, their datatypes and the raw response."""
    if client == "grpc":
        grpc_inputs = []
        for name, (datatype, data) in sent.items():
            tensor = grpcclient.InferInput(name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data)
            grpc_inputs.append(tensor)
        grpc_client = InThread(lambda: grpcclient.InferenceServerClient(address))
        try:
            result = await grpc_client.run(lambda c: c.infer(MODEL, grpc_inputs))
        finally:
            grpc_client.close()
        response = result.get_response()
        datatypes = {output.name: output.datatype for output in response.outputs}
    else:
        binary = client == "rest-v2-binary"
        http_inputs = []
        for name, (datatype, data) in sent.items():
            tensor = httpclient.InferInput(name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data, binary_data=binary)
            http_inputs.append(tensor)
        # No outputs named: tritonclient then asks for every output as binary data.
        outputs = (
            None
            if binary
            else [httpclient.InferRequestedOutput(name, binary_data=False) for name in sent]
        )
        http_client = InThread(lambda: httpclient.InferenceServerClient(address))
        try:
            result = await http_client.run(lambda c: c.infer(MODEL, http_inputs, outputs=outputs))
        finally:
            http_client.close()
        response = result.get_response()
        datatypes = {output["name"]: output["datatype"] for output in response["outputs"]}
    arrays = {name: result.as_numpy(name) for name in datatypes}
    return arrays, datatypes, response


def assert_client_form(client: str, response: Any) -> None:
    """The answer is in the form the client asked for."""
    if client == "grpc":
        # tritonclient always sends raw contents, so the answer must be raw too.
        assert len(response.raw_output_contents) == len(response.outputs)
        assert all(output.contents.ByteSize() == 0 for output in response.outputs)
    elif client == "rest-v2-binary":
        for output in response["outputs"]:
            assert "data" not in output, output
            assert "binary_data_size" in output["parameters"], output
    else:
        for output in response["outputs"]:
            assert "data" in output, output
            assert "binary_data_size" not in (output.get("parameters") or {}), output


async def v1_predict(address: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{address}/v1/models/{MODEL}:predict", json=body) as response,
    ):
        return response.status, await response.json(loads=orjson.loads)


async def refused(client: str, address: str, sent: dict[str, tuple[str, Any]]) -> tuple[str, str]:
    """The status (HTTP status or gRPC code name) and message of a refused request."""
    with pytest.raises(InferenceServerException) as caught:
        await infer(client, address, sent)
    status = str(caught.value.status())
    return status.removeprefix("StatusCode."), caught.value.message()


# Identity gateway: values round-trip exactly, in the client's form


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
@pytest.mark.parametrize("client", V2_CLIENTS)
async def test_every_datatype_round_trips(
    gateways: Gateways, client: str, predictor_protocol: str
) -> None:
    # Non-UTF-8 BYTES need binary or gRPC on both sides; v1 refuses them (test below).
    non_utf8 = client != "rest-v2-json" and predictor_protocol != "v1"
    sent = tensors(client, non_utf8)
    address = host(gateways.identity[predictor_protocol], "grpc-v2" if client == "grpc" else "v2")
    arrays, datatypes, response = await infer(client, address, sent)
    assert list(arrays) == list(sent), "every tensor comes back, in order, under its name"
    for name, (datatype, data) in sent.items():
        assert datatypes[name] == expected_datatype(datatype, predictor_protocol), name
        assert arrays[name].shape == data.shape, name
        assert values(arrays[name]) == values(data), name
    assert_client_form(client, response)


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
async def test_bf16_as_json(gateways: Gateways, predictor_protocol: str) -> None:
    body: dict[str, Any] = {
        "inputs": [{"name": "b", "datatype": "BF16", "shape": [2, 2], "data": BF16_VALUES}],
        "outputs": [{"name": "b", "parameters": {"binary_data": False}}],
    }
    if predictor_protocol == "v1":
        body["outputs"][0]["name"] = "input-0"  # one tensor through v1: it has no name
    address = host(gateways.identity[predictor_protocol])
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://{address}/v2/models/{MODEL}/infer", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        (output,) = (await response.json())["outputs"]
    assert output["datatype"] == expected_datatype("BF16", predictor_protocol)
    # JSON writes BF16 as the shortest decimal that reads back as the same BF16 value.
    returned = np.array(output["data"], dtype=np.float64).astype(ml_dtypes.bfloat16)
    assert values(returned) == [value for row in BF16_VALUES for value in row]


@pytest.mark.parametrize("client", V2_CLIENTS)
async def test_one_tensor_through_v1_comes_back_as_input_0(gateways: Gateways, client: str) -> None:
    """v1 predictions have no names: a lone tensor comes back under v1's name for one."""
    data = np.array([[1, 2], [3, 4]], dtype=np.int32)
    address = host(gateways.identity["v1"], "grpc-v2" if client == "grpc" else "v2")
    if client == "rest-v2-json":  # it names the outputs it wants, so it must know v1's name
        http_client = InThread(lambda: httpclient.InferenceServerClient(address))
        tensor = httpclient.InferInput("x", [2, 2], "INT32")
        tensor.set_data_from_numpy(data, binary_data=False)
        wanted = [httpclient.InferRequestedOutput("input-0", binary_data=False)]
        try:
            result = await http_client.run(lambda c: c.infer(MODEL, [tensor], outputs=wanted))
        finally:
            http_client.close()
        arrays = {"input-0": result.as_numpy("input-0")}
    else:
        arrays, _, _ = await infer(client, address, {"x": ("INT32", data)})
    assert list(arrays) == ["input-0"]
    assert arrays["input-0"].tolist() == data.tolist()


V1_BODIES = {
    "floats": [[1.5, -2.25, 1e-300], [0.1, 3.4e38, -0.0]],
    "ints": [[-(2**63), 2**63 - 1], [0, 7]],
    "uint64": [0, 2**64 - 1],
    "bools": [[True, False], [False, True]],
    "strings": ["café", "", "🙂", "a,b"],
    "rows": [
        {"age": 31, "income": 52000.5, "name": "ann", "member": True},
        {"age": 47, "income": 0.25, "name": "bo", "member": False},
    ],
}


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
async def test_v1_instances_round_trip(gateways: Gateways, predictor_protocol: str) -> None:
    address = host(gateways.identity[predictor_protocol])
    for kind, instances in V1_BODIES.items():
        status, answer = await v1_predict(address, {"instances": instances})
        assert status == 200, (kind, answer)
        # Byte for byte: an int that came back a float, or a bool an int, would show.
        assert orjson.dumps(answer) == orjson.dumps({"predictions": instances}), kind


# Refused pairs


@pytest.mark.parametrize("client", V2_CLIENTS)
async def test_v1_predictor_refuses_tensors_without_a_shared_first_dimension(
    gateways: Gateways, client: str
) -> None:
    sent = {
        "a": ("INT32", np.zeros((2, 2), dtype=np.int32)),
        "b": ("INT32", np.zeros((3,), dtype=np.int32)),
    }
    address = host(gateways.identity["v1"], "grpc-v2" if client == "grpc" else "v2")
    status, message = await refused(client, address, sent)
    assert status == ("INVALID_ARGUMENT" if client == "grpc" else "400")
    assert "tensors a, b do not share a first dimension, so they have no v1 form" in message


@pytest.mark.parametrize("client", ["rest-v2-binary", "grpc"])
async def test_v1_predictor_refuses_bytes_that_are_not_utf8(
    gateways: Gateways, client: str
) -> None:
    address = host(gateways.identity["v1"], "grpc-v2" if client == "grpc" else "v2")
    status, message = await refused(client, address, {"raw": ("BYTES", NON_UTF8)})
    assert status == ("INVALID_ARGUMENT" if client == "grpc" else "400")
    assert "tensor 'raw': BYTES that are not UTF-8 have no v1 (JSON) form" in message


V1_REFUSED = {
    "ragged": ([[1, 2], [3]], "instances: 'input-0' is not a regular array"),
    "null": ([1.5, None], "instances: 'input-0' holds values with no tensor datatype"),
    "objects": ([[{"a": 1}], [{"a": 2}]], "instances: 'input-0' holds values with no"),
    "keys": ([{"a": 1}, {"b": 2}], "instances: rows do not all have the same keys"),
    "strings and numbers": ([1, "a"], "instances: 'input-0' mixes strings with other values"),
    "integers beyond 64 bits": ([-1, 2**64 - 1], "instances: 'input-0' holds integers that"),
}


@pytest.mark.parametrize("predictor_protocol", ["v2", "grpc-v2"])
@pytest.mark.parametrize("case", V1_REFUSED)
async def test_v1_instances_a_v2_predictor_cannot_take_are_refused(
    gateways: Gateways, predictor_protocol: str, case: str
) -> None:
    instances, message = V1_REFUSED[case]
    status, answer = await v1_predict(
        host(gateways.identity[predictor_protocol]), {"instances": instances}
    )
    assert status == 400, answer
    assert answer["error"].startswith(message), answer


async def test_v1_predictor_takes_any_json_from_a_v1_client(gateways: Gateways) -> None:
    """Same protocol: the body passes through, so nothing needs a tensor form."""
    address = host(gateways.identity["v1"])
    for instances, _ in V1_REFUSED.values():
        status, answer = await v1_predict(address, {"instances": instances})
        assert status == 200, answer
        assert answer == {"predictions": instances}


# A transformer with its own preprocess / postprocess


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
@pytest.mark.parametrize("client", V2_CLIENTS)
async def test_transformer_sees_infer_request_and_infer_response(
    gateways: Gateways, client: str, predictor_protocol: str
) -> None:
    x = np.array([[1.5, -2.0, 0.25], [3.0, 0.0, -7.5]], dtype=np.float32)
    tags = np.array([b"first", b"second"], dtype=np.object_)
    sent = {"x": ("FP32", x), "tag": ("BYTES", tags)}
    address = host(gateways.doubler[predictor_protocol], "grpc-v2" if client == "grpc" else "v2")
    arrays, datatypes, response = await infer(client, address, sent)
    assert datatypes["x"] == expected_datatype("FP32", predictor_protocol)
    assert values(arrays["x"]) == values(x * 2), "preprocess ran on an InferRequest"
    assert values(arrays["tag"]) == values(tags)
    if client == "grpc":
        assert response.parameters[SAW].string_param == "InferResponse"
    else:
        assert response["parameters"][SAW] == "InferResponse"
    assert_client_form(client, response)


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
async def test_transformer_sees_dicts_from_a_v1_client(
    gateways: Gateways, predictor_protocol: str
) -> None:
    instances = [[1.5, -2.0, 0.25], [3.0, 0.0, -7.5]]
    status, answer = await v1_predict(
        host(gateways.doubler[predictor_protocol]), {"instances": instances}
    )
    assert status == 200, answer
    assert answer == {
        "predictions": [[value * 2 for value in row] for row in instances],
        SAW: "dict",
    }


@pytest.mark.parametrize("predictor_protocol", PROTOCOLS)
async def test_grpc_typed_contents_come_back_typed(
    gateways: Gateways, predictor_protocol: str
) -> None:
    """A gRPC client that sends typed contents (not raw, as tritonclient does) gets them."""
    message = pb.ModelInferRequest(model_name=MODEL)
    typed = {
        "f": ("FP32", "fp32_contents", [1.5, -2.25]),
        "i": ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
        "b": ("BOOL", "bool_contents", [True, False]),
        "s": ("BYTES", "bytes_contents", [b"caf\xc3\xa9", b""]),
    }
    for name, (datatype, field, data) in typed.items():
        tensor = message.inputs.add(name=name, datatype=datatype, shape=[2])
        getattr(tensor.contents, field).extend(data)
    async with grpc.aio.insecure_channel(
        host(gateways.identity[predictor_protocol], "grpc-v2")
    ) as ch:
        answer = pb.ModelInferResponse.FromString(
            await grpc_infer(ch)(message.SerializeToString(), timeout=10)
        )
    assert not answer.raw_output_contents
    assert [output.name for output in answer.outputs] == list(typed)
    for output in answer.outputs:
        datatype, field, data = typed[output.name]
        expected = expected_datatype(datatype, predictor_protocol)
        assert output.datatype == expected, output.name
        assert list(getattr(output.contents, TYPED_FIELD.get(expected, field))) == data
