"""The iris model behind KServe's v1 protocol, served by the gateway's own ModelServer.

MLServer speaks only v2, so this stands in for a v1 predictor (as KServe's sklearn server
is by default). It answers v2 and gRPC too: every model the gateway serves does.

    python examples/transformer/predictor_v1.py --model_dir /tmp/iris \\
        --model_name iris --http_port 9000 --grpc_port 9001

Needs scikit-learn, which the gateway itself does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from gateway import InferOutput, InferRequest, InferResponse, InvalidInput, model_server
from gateway.model import Model
from gateway.model_server import ModelServer


class IrisPredictor(Model):
    """v1: ``{"instances": [[x1, ..., x4], ...]}`` -> ``{"predictions": [class, ...]}``."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.model: Any = None

    def load(self) -> bool:
        self.model = joblib.load(self.model_dir / "model.joblib")
        self.ready = True
        return self.ready

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            classes = self._predict(payload.inputs[0].as_numpy() if payload.inputs else None)
            output = InferOutput("predict", list(classes.shape), "INT64")
            output.set_data_from_numpy(classes)
            return InferResponse(payload.id or "", self.name, [output])
        instances = payload.get("instances") if isinstance(payload, dict) else None
        return {"predictions": self._predict(instances).tolist()}

    def _predict(self, rows: Any) -> np.ndarray[Any, Any]:
        try:
            features = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            features = None
        if features is None or features.ndim != 2:
            raise InvalidInput("expected rows of numbers: [[x1, ..., x4], ...]")
        try:
            # A model this small answers in microseconds: no need to leave the event loop.
            classes: np.ndarray[Any, Any] = self.model.predict(features).astype(np.int64)
        except ValueError as exc:  # the wrong number of features, say
            raise InvalidInput(str(exc)) from None
        return classes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", required=True, help="the directory train.py wrote")
    args, _ = parser.parse_known_args()
    model = IrisPredictor(args.model_name, args.model_dir)
    model.load()
    ModelServer().start([model])
