"""The fast path: an identity gateway whose predictor speaks the client's protocol forwards
the body without decoding it, and answers with the predictor's bytes.

The gateways run in this process with every decoder of requests and responses made to
raise; the predictor is a process of its own, untouched. A request that succeeds cannot
have been decoded by the gateway, and a control request that must be decoded fails.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, NoReturn

import aiohttp
import grpc
import numpy as np
import orjson
import pytest

from gateway import InferInput, InferRequest, InferResponse
from gateway._proto import pb
from gateway.codecs.rest import INFERENCE_HEADER
from gateway.server import rest_v1
from tests.e2e.support import MODEL, PROTOCOLS, Gateway, gateway_to, grpc_infer, host
from tests.server.procs import ServerProcess

MIB = 1 << 20


def decoded(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("the gateway decoded a body it should have passed through")


@pytest.fixture
async def gateways(predictor: ServerProcess) -> AsyncIterator[dict[str, Gateway]]:
    """An identity gateway in this process for each predictor protocol."""
    async with AsyncExitStack() as stack:
        yield {
            protocol: await stack.enter_async_context(
                gateway_to(host(predictor, protocol), protocol)
            )
            for protocol in PROTOCOLS
        }


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (InferRequest, InferResponse):
        monkeypatch.setattr(cls, "from_bytes", decoded)
        monkeypatch.setattr(cls, "from_grpc_bytes", decoded)
    monkeypatch.setattr(rest_v1, "decode", decoded)


def binary_body(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request for one FP32 tensor holding `raw`, answered binary."""
    header = orjson.dumps(
        {
            "id": "big",
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(raw) // 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + raw, {INFERENCE_HEADER: str(len(header))}


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    # aiohttp warns about a body over 1 MiB given as bytes; in a BytesIO it is streamed.
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=io.BytesIO(body), headers=headers) as response,
    ):
        return response.status, await response.read(), response.headers


async def test_rest_bodies_pass_through_undecoded(
    predictor: ServerProcess, gateways: dict[str, Gateway], no_decoding: None
) -> None:
    # Every bit pattern, NaN payloads included: a decode / encode round could change them.
    raw = np.random.default_rng(7).integers(0, 256, MIB, dtype=np.uint8).tobytes()
    body, headers = binary_body(raw)
    path = f"/v2/models/{MODEL}/infer"
    direct = await post(f"{predictor.base_url}{path}", body, headers)
    status, answer, answer_headers = await post(f"{gateways['v2'].base_url}{path}", body, headers)
    assert status == 200, answer[:300]
    assert answer == direct[1], "the predictor's answer, byte for byte"
    json_length = int(answer_headers[INFERENCE_HEADER])
    assert answer[json_length:] == raw, "1 MiB of FP32 came back bit-identical"

    json_body = orjson.dumps(
        {"inputs": [{"name": "y", "shape": [3], "datatype": "INT64", "data": [1, -2, 2**62]}]}
    )
    json_headers = {"Content-Type": "application/json"}
    status, answer, _ = await post(f"{gateways['v2'].base_url}{path}", json_body, json_headers)
    assert status == 200, answer
    assert orjson.loads(answer)["outputs"][0]["data"] == [1, -2, 2**62]

    # v1: JSON that has no tensor form passes too, since nothing reads it.
    v1_body = orjson.dumps({"instances": [[1, "a"], [None]]})
    status, answer, _ = await post(
        f"{gateways['v1'].base_url}/v1/models/{MODEL}:predict", v1_body, json_headers
    )
    assert status == 200, answer
    assert orjson.loads(answer) == {"predictions": [[1, "a"], [None]]}


async def test_grpc_messages_pass_through_undecoded(
    predictor: ServerProcess, gateways: dict[str, Gateway], no_decoding: None
) -> None:
    raw = np.random.default_rng(8).integers(0, 256, MIB, dtype=np.uint8).tobytes()
    message = pb.ModelInferRequest(model_name=MODEL, id="big")
    message.inputs.add(name="x", datatype="FP32", shape=[MIB // 4])
    message.raw_input_contents.append(raw)
    data = message.SerializeToString()

    async with (
        grpc.aio.insecure_channel(host(predictor, "grpc-v2")) as direct_channel,
        grpc.aio.insecure_channel(gateways["grpc-v2"].grpc) as channel,
    ):
        direct = await grpc_infer(direct_channel)(data, timeout=10)
        answer = await grpc_infer(channel)(data, timeout=10)
    assert answer == direct, "the predictor's answer, byte for byte"
    response = pb.ModelInferResponse.FromString(answer)
    assert response.raw_output_contents[0] == raw, "1 MiB of FP32 came back bit-identical"


async def test_control_a_request_that_must_be_decoded_fails_without_decoders(
    gateways: dict[str, Gateway], no_decoding: None
) -> None:
    """The patches bite: gRPC to a REST predictor must decode, and so it fails."""
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    data = InferRequest(MODEL, [tensor]).to_grpc_bytes()
    async with grpc.aio.insecure_channel(gateways["v2"].grpc) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_infer(channel)(data, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error: RuntimeError"
