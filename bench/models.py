"""The benchmarks' model: an identity (echo) model, one source for both SDKs.

The model is written once against KServe's public API and served either by our
`gateway.model_server.ModelServer` or by `kserve.ModelServer`: as with any KServe model ported
to the gateway, only the imports differ. Run from the repo root (the benchmark does this):

    python -m bench.models --sdk gateway --http_port 0 --grpc_port 0 --listen_address 127.0.0.1
    python -m bench.models --sdk kserve --http_port 8080 --grpc_port 8081   # in KServe's venv

Every other flag is the SDK's own (KServe's parser reads them, ours too).
v2: each input comes back as an output of the same name, shape and datatype, binary when the
client asked for binary outputs; v1: ``{"instances": [...]}`` comes back as
``{"predictions": [...]}``.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

MODEL_NAME = "echo"


def sdk_api(sdk: str) -> SimpleNamespace:
    """The five names the model needs, from `sdk` ("gateway" or "kserve")."""
    if sdk == "kserve":
        # Only installed in the benchmark's own KServe environment.
        import kserve  # type: ignore[import-not-found, unused-ignore]

        return SimpleNamespace(
            Model=kserve.Model,
            ModelServer=kserve.ModelServer,
            InferRequest=kserve.InferRequest,
            InferOutput=kserve.InferOutput,
            InferResponse=kserve.InferResponse,
        )
    from gateway import InferOutput, InferRequest, InferResponse
    from gateway.model import Model
    from gateway.model_server import ModelServer

    return SimpleNamespace(
        Model=Model,
        ModelServer=ModelServer,
        InferRequest=InferRequest,
        InferOutput=InferOutput,
        InferResponse=InferResponse,
    )


def echo_model(api: SimpleNamespace, name: str = MODEL_NAME) -> Any:
    """An identity model built on `api`'s `Model`, using only KServe's public tensor API."""

    class Echo(api.Model):  # type: ignore[misc, name-defined]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.ready = True

        async def predict(
            self,
            payload: Any,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> Any:
            if isinstance(payload, api.InferRequest):
                binary = payload.use_binary_outputs
                outputs = []
                for tensor in payload.inputs:
                    output = api.InferOutput(tensor.name, tensor.shape, tensor.datatype)
                    output.set_data_from_numpy(tensor.as_numpy(), binary_data=binary)
                    outputs.append(output)
                return api.InferResponse(
                    response_id=payload.id or "",
                    model_name=self.name,
                    infer_outputs=outputs,
                    use_binary_outputs=binary,
                )
            return {"predictions": payload["instances"]}

    return Echo(name)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--sdk", choices=["gateway", "kserve"], default="gateway")
    args, _ = parser.parse_known_args()
    api = sdk_api(args.sdk)
    model = echo_model(api)
    model.load()
    api.ModelServer().start([model])


if __name__ == "__main__":
    main()
