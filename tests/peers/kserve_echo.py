"""KServe's own `ModelServer` serving an identity model, run with KServe's interpreter (its
own virtual environment, made by `bench/venvs.py`), never ours:

    <kserve-venv>/bin/python -m tests.peers.kserve_echo --model_name m --http_port P --grpc_port Q

Each input is decoded with KServe's `as_numpy` and sent back with its `set_data_from_numpy`
(binary when the client asked for binary), and beside it ``<name>.seen``: the values KServe
decoded (`tests.peers.seen`). An input named `RAISE` makes it raise instead.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import kserve  # type: ignore[import-not-found, unused-ignore]
import numpy as np
import uvicorn  # type: ignore[import-not-found, unused-ignore]
from kserve import InferOutput, InferRequest, InferResponse, model_server  # type: ignore[import-not-found, unused-ignore]
from kserve.protocol.grpc import server as grpc_server  # type: ignore[import-not-found, unused-ignore]
from kserve.protocol.rest import server as rest_server  # type: ignore[import-not-found, unused-ignore]

from tests.peers.seen import RAISE, SUFFIX, seen

LOOPBACK = "127.0.0.1"


class Echo(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        assert isinstance(payload, InferRequest), type(payload)
        if any(tensor.name == RAISE for tensor in payload.inputs):
            raise RuntimeError("asked to raise")
        binary = payload.use_binary_outputs
        outputs = []
        for tensor in payload.inputs:
            array = tensor.as_numpy()
            echo = InferOutput(tensor.name, tensor.shape, tensor.datatype)
            echo.set_data_from_numpy(array, binary_data=binary)
            flat = [v.encode() if isinstance(v, str) else v for v in array.ravel().tolist()]
            report = InferOutput(tensor.name + SUFFIX, [1], "BYTES")
            report.set_data_from_numpy(np.array([seen(array.shape, flat)], object), binary)
            outputs += [echo, report]
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


def _on_loopback() -> None:
    """KServe binds every interface (0.0.0.0 and [::]) with no flag to change it; tests keep
    their servers on 127.0.0.1, so its two bind calls are pointed there."""

    class Config(uvicorn.Config):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "host": LOOPBACK})

    def server(*args: Any, **kwargs: Any) -> Any:
        created = grpc.aio.server(*args, **kwargs)
        add_port = created.add_insecure_port
        created.add_insecure_port = lambda address: add_port(
            f"{LOOPBACK}:{address.rsplit(':', 1)[1]}"
        )
        return created

    rest_server.uvicorn.Config = Config
    grpc_server.aio = argparse.Namespace(server=server)


def main() -> None:
    args, _ = argparse.ArgumentParser(parents=[model_server.parser]).parse_known_args()
    _on_loopback()
    kserve.ModelServer().start([Echo(args.model_name)])


if __name__ == "__main__":
    main()
