"""An identity model for MLServer: every input comes back as an output of the same name,
shape, datatype and data, as MLServer decoded it (its own codecs, not ours), and beside it
``<name>.seen``: the values it decoded (`tests.peers.seen`). An input named `RAISE` makes it
raise instead."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

from tests.peers.seen import RAISE, SUFFIX, seen


class Echo(MLModel):  # type: ignore[misc]
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if any(tensor.name == RAISE for tensor in payload.inputs):
            raise RuntimeError("asked to raise")
        outputs = []
        for tensor in payload.inputs:
            report = seen(tensor.shape, _values(tensor))
            outputs += [
                ResponseOutput(
                    name=tensor.name, shape=tensor.shape, datatype=tensor.datatype, data=tensor.data
                ),
                ResponseOutput(
                    name=tensor.name + SUFFIX, shape=[1], datatype="BYTES", data=[report]
                ),
            ]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)


def _values(tensor: RequestInput) -> list[object]:
    if tensor.datatype == "BYTES":
        # MLServer's NumpyCodec makes fixed-width arrays of BYTES, which drop trailing NULs:
        # its decoded data (str from JSON, bytes from gRPC) is what it holds.
        return [v.encode() if isinstance(v, str) else bytes(v) for v in tensor.data]
    return list(NumpyCodec.decode_input(tensor).ravel().tolist())
