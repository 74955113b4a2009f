"""An occlusion explainer for the iris model: which measurements decided each prediction.

It takes records as the model does (scaled by the transformer in front of it), and asks the
predictor about each record and about copies with one feature at a time set to the training
mean (0, once scaled). Features whose removal changes the predicted class are the decisive
ones. It needs nothing but the predictor, reached through the model's own hop, so it works
whatever protocol the predictor speaks::

    gateway serve --transformer examples/transformer/explainer.py:OcclusionExplainer \\
        --model_name iris --predictor_host localhost:9080 --predictor_protocol v2 \\
        --predictor_rest_format json

The transformer points at it with ``--explainer_host``; its ``:explain`` requests end here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway import InferRequest, InvalidInput
from gateway.model import Model


class OcclusionExplainer(Model):
    """``{"instances": [[x1, ..., xF], ...]}`` -> one ``{"class", "decisive_features"}`` each."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        rows = _rows(payload)
        count, width = rows.shape
        # One block per record: the record itself, then a copy per feature with it at 0.
        batch = np.repeat(rows[:, np.newaxis, :], width + 1, axis=1)
        for feature in range(width):
            batch[:, feature + 1, feature] = 0.0
        # One call for the whole batch, through the predictor hop (as `predict` does).
        answer = await self.predict({"instances": batch.reshape(-1, width).tolist()}, headers)
        classes = np.asarray(answer["predictions"]).reshape(count, width + 1)
        return {
            "explanations": [
                {
                    "class": int(block[0]),
                    "decisive_features": [i for i in range(width) if block[i + 1] != block[0]],
                }
                for block in classes
            ]
        }


def _rows(payload: Any) -> np.ndarray[Any, Any]:
    if isinstance(payload, InferRequest):
        array = payload.inputs[0].as_numpy() if payload.inputs else None
    elif isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        array = np.asarray(payload["instances"])
    else:
        array = None
    if array is None or array.ndim != 2 or array.dtype.kind not in "iuf":
        raise InvalidInput('expected {"instances": [[x1, ..., xF], ...]}, numbers in rows')
    rows: np.ndarray[Any, Any] = array.astype(np.float64)
    return rows
