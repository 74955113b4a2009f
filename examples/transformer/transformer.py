"""An iris transformer: raw flower measurements in, species names out.

Clients send records (``{"sepal_length": 5.1, ...}``); `preprocess` checks them, fills gaps
and scales them with the statistics the model was trained with; the predictor (any sklearn
server: MLServer, KServe's, ``predictor_v1.py``) answers class indices; `postprocess` turns
them into labels. Which protocol the predictor speaks (``--predictor_protocol`` v1, v2 or
grpc-v2) does not matter here: the gateway's hop maps the request and answers in the form
`preprocess` produced.

Run it under the gateway's CLI::

    FEATURES_FILE=/tmp/iris/features.json gateway serve \\
        --transformer examples/transformer/transformer.py:IrisTransformer \\
        --model_name iris --predictor_host localhost:9081 --predictor_protocol grpc-v2

or as a KServe-style script (see the bottom of this file)::

    python examples/transformer/transformer.py --features_file /tmp/iris/features.json \\
        --model_name iris --predictor_host localhost:9081 --predictor_protocol grpc-v2

Porting from KServe: only the imports differ (``kserve`` -> ``gateway``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gateway import (
    InferenceError,
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    InvalidInput,
    model_server,
)
from gateway.model import Model
from gateway.model_server import ModelServer

# Under `gateway serve` the class gets only its name, so its settings come from the
# environment (the KServe-style script below also takes them as a flag).
FEATURES_FILE = "FEATURES_FILE"


class IrisTransformer(Model):
    """v2 requests: one input per feature ([N] or [N, 1]). v1: ``{"instances": [record, ...]}``."""

    def __init__(self, name: str, features_file: str | None = None) -> None:
        super().__init__(name)
        self.features_file = features_file or os.environ.get(FEATURES_FILE)
        self.features: list[str] = []
        self.labels = np.array([], dtype=object)
        self.mean = np.zeros(0)
        self.scale = np.ones(0)
        # Not ready until load(): the server calls load() off the event loop at start-up.
        self.ready = False

    def load(self) -> bool:
        if not self.features_file:
            raise RuntimeError(f"set {FEATURES_FILE} to the features.json that train.py wrote")
        spec = json.loads(Path(self.features_file).read_text())
        self.features = list(spec["features"])
        self.mean = np.asarray(spec["mean"], dtype=np.float64)
        self.scale = np.asarray(spec["scale"], dtype=np.float64)
        self.labels = np.asarray(spec["labels"], dtype=object)
        self.ready = True
        return self.ready

    # A few rows of pandas take microseconds, so the handlers are async and stay on the
    # event loop. For heavy work write them as plain `def`: the server then runs them in
    # its thread pool.

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferRequest:
        if isinstance(payload, InferRequest):
            features = self._scaled(payload.as_dataframe())
            tensor = InferInput("input-0", list(features.shape), "FP64")
            tensor.set_data_from_numpy(features)
            # A new request: the client's requested outputs ("label") mean nothing upstream.
            return InferRequest(self.name, [tensor], request_id=payload.id)
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not all(isinstance(r, dict) for r in instances):
            raise InvalidInput('expected {"instances": [{"sepal_length": 5.1, ...}, ...]}')
        return {"instances": self._scaled(pd.DataFrame(instances)).tolist()}

    async def postprocess(
        self,
        result: dict[str, Any] | InferResponse,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(result, InferResponse):
            # Servers name their output differently ("predict", "output-0"): take the first.
            labels = self._labels(result.outputs[0].as_numpy())
            output = InferOutput("label", [len(labels)], "BYTES")
            output.set_data_from_numpy(labels)
            return InferResponse(result.id, self.name, [output])
        if "predictions" in result:
            return {"predictions": self._labels(np.asarray(result["predictions"])).tolist()}
        if "explanations" in result:  # postprocess sees the explainer's answer too
            return {"explanations": [self._named(e) for e in result["explanations"]]}
        return result

    def _scaled(self, records: pd.DataFrame) -> np.ndarray[Any, Any]:
        """The model's input: the features in training order, gaps filled, standardized."""
        missing = [name for name in self.features if name not in records.columns]
        if missing:
            raise InvalidInput(
                f"records lack {', '.join(missing)} (expected {', '.join(self.features)})"
            )
        try:
            # Extra fields (an id, say) are ignored; a v1 null becomes NaN.
            values = records[self.features].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"feature values must be numbers: {exc}") from None
        if np.isinf(values).any():
            raise InvalidInput("feature values must be finite")
        scaled: np.ndarray[Any, Any] = (values - self.mean) / self.scale
        # A missing measurement counts as the training mean, which scales to 0.
        scaled[np.isnan(scaled)] = 0.0
        return scaled

    def _labels(self, classes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        indices = classes.ravel().astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.labels)):
            # The predictor's fault, not the client's: a 500, not a 400.
            raise InferenceError(
                f"the predictor answered classes outside 0..{len(self.labels) - 1}"
            )
        labels: np.ndarray[Any, Any] = self.labels[indices]
        return labels

    def _named(self, explanation: dict[str, Any]) -> dict[str, Any]:
        """The explainer's answer for one record, with names for its class and features."""
        return {
            "label": str(self.labels[explanation["class"]]),
            "decisive_features": [self.features[i] for i in explanation["decisive_features"]],
        }

    # Metadata (GET /v2/models/iris) tells clients what to send.

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in self.features]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "label", "datatype": "BYTES", "shape": [-1]}]


if __name__ == "__main__":
    # KServe's script pattern: the server's flags plus our own. Parsed here, not at import,
    # because `gateway serve --transformer` imports this file too.
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument(
        "--features_file",
        default=os.environ.get(FEATURES_FILE),
        help="the features.json train.py wrote (default: $FEATURES_FILE)",
    )
    args, _ = parser.parse_known_args()
    ModelServer().start([IrisTransformer(args.model_name, features_file=args.features_file)])
