"""The demo's models: a small iris classifier served as the predictor, an explainer for it,
and the transformer in front of both, which turns raw measurements into the classifier's
standardized inputs and its probabilities into labels; and for the demo's inference graph, a
second classifier (nearest centroid) and the transformer in front of the graph, which averages
the probabilities of every classifier the graph asked.

Real code a user could copy: numpy only, every protocol (v2 REST JSON or binary, gRPC v2,
and v1 for explanations) handled by the same few lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidInput
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.infer_type import InferInput, InferOutput
from gateway.model import Model

__all__ = [
    "CLASSES",
    "FEATURES",
    "IrisCentroids",
    "IrisClassifier",
    "IrisExplainer",
    "IrisGraphTransformer",
    "IrisTransformer",
    "probabilities",
]

Floats = npt.NDArray[np.float32]

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
# Fitted once on the iris data set (scikit-learn's LogisticRegression on standardized
# features, 97% accurate), then written down so the demo needs neither.
MEAN = np.array([5.843, 3.057, 3.758, 1.199], dtype=np.float32)
STD = np.array([0.825, 0.434, 1.759, 0.760], dtype=np.float32)
WEIGHTS = np.array(
    [[-1.08, 1.16, -1.93, -1.81], [0.59, -0.36, -0.36, -0.83], [0.49, -0.80, 2.29, 2.64]],
    dtype=np.float32,
)
BIAS = np.array([-0.20, 2.07, -1.87], dtype=np.float32)
# Each species' mean measurements (cm), for the nearest-centroid classifier.
CENTROIDS = np.array(
    [[5.006, 3.428, 1.462, 0.246], [5.936, 2.770, 4.260, 1.326], [6.588, 2.974, 5.552, 2.026]],
    dtype=np.float32,
)

# The tensor names on each side of the transformer.
RAW_INPUT = "measurements"  # what clients send: centimetres, [N, 4]
MODEL_INPUT = "input-0"  # what the classifier takes: standardized, [N, 4]


def probabilities(standardized: Floats) -> Floats:
    """Class probabilities, [N, 3], of standardized rows [N, 4] (a softmax of a linear map)."""
    logits = standardized @ WEIGHTS.T + BIAS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores: Floats = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores


def centroid_probabilities(standardized: Floats) -> Floats:
    """Class probabilities, [N, 3], from each row's squared distance to each species' centroid
    (a softmax of minus half of it), all in standardized units."""
    centroids = standardize(CENTROIDS)
    distances = ((standardized[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    exp = np.exp(-0.5 * (distances - distances.min(axis=1, keepdims=True)))
    scores: Floats = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores


def standardize(measurements: Floats) -> Floats:
    return ((measurements - MEAN) / STD).astype(np.float32)


def _rows(tensor: InferInput | None, name: str) -> Floats:
    """The [N, 4] float32 rows of a tensor, refusing anything else with a 400."""
    if tensor is None:
        raise InvalidInput(f"expected an input named {name!r}")
    rows = np.asarray(tensor.as_numpy(), dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
        raise InvalidInput(f"{name!r} must be [N, {len(FEATURES)}], got {list(rows.shape)}")
    return rows


def _instances(payload: Any) -> Floats:
    """The [N, 4] rows of a v1 ``{"instances": [...]}`` body."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('expected {"instances": [[4 numbers], ...]}')
    try:
        rows = np.asarray(payload["instances"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"instances must be numbers: {exc}") from None
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
        raise InvalidInput(f"instances must be [N, {len(FEATURES)}], got {list(rows.shape)}")
    return rows


class IrisClassifier(Model):
    """The predictor: ``input-0`` [N, 4] standardized FP32 -> ``probabilities`` [N, 3]."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def scores(self, standardized: Floats) -> Floats:
        return probabilities(standardized)

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the classifier speaks the v2 protocol only")
        scores = self.scores(_rows(payload.get_input_by_name(MODEL_INPUT), MODEL_INPUT))
        output = InferOutput("probabilities", list(scores.shape), "FP32")
        output.set_data_from_numpy(scores)
        return InferResponse(payload.id or "", self.name, [output])


class IrisCentroids(IrisClassifier):
    """A second predictor, the same inputs and outputs: the nearest species' centroid."""

    def scores(self, standardized: Floats) -> Floats:
        return centroid_probabilities(standardized)


class IrisExplainer(Model):
    """The explainer (v1): each feature's contribution to the predicted class's logit."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        rows = _instances(payload)
        chosen = probabilities(rows).argmax(axis=1)
        contributions = rows * WEIGHTS[chosen]
        return {
            "explanations": [
                {
                    "class": CLASSES[label],
                    "contributions": dict(zip(FEATURES, row.tolist(), strict=True)),
                }
                for label, row in zip(chosen.tolist(), contributions, strict=True)
            ]
        }


class IrisTransformer(Model):
    """In front of the classifier: centimetres in, standardized features to the predictor;
    probabilities back, a label per row added for the client."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Any:
        if isinstance(payload, dict):  # v1, on its way to the explainer
            return {"instances": standardize(_instances(payload)).tolist()}
        rows = standardize(_rows(payload.get_input_by_name(RAW_INPUT), RAW_INPUT))
        tensor = InferInput(MODEL_INPUT, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        return InferRequest(self.name, [tensor], request_id=payload.id)

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        if not isinstance(result, InferResponse):
            return result  # an explanation: already what the client wants
        scores = result.get_output_by_name("probabilities")
        if scores is None:
            raise InvalidInput("the predictor answered without 'probabilities'")
        chosen = scores.as_numpy().argmax(axis=1)
        labels = np.array([CLASSES[i].encode() for i in chosen.tolist()], dtype=np.object_)
        label = InferOutput("label", [len(labels)], "BYTES")
        label.set_data_from_numpy(labels)
        return InferResponse(result.id, self.name, [label, scores])


class IrisGraphTransformer(IrisTransformer):
    """In front of an inference graph of classifiers: as `IrisTransformer`, but the request's
    parameters go on (the graph's Switch reads them), and the probabilities of every
    classifier that answered (an Ensemble answers ``<step>.probabilities`` for each) are
    averaged before the label is picked."""

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> Any:
        request = await super().preprocess(payload, headers)
        if isinstance(payload, InferRequest) and isinstance(request, InferRequest):
            request.parameters = payload.parameters
        return request

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        if not isinstance(result, InferResponse):
            return result
        found = [o.as_numpy() for o in result.outputs if o.name.endswith("probabilities")]
        if not found:
            raise InvalidInput("no classifier of the graph answered with probabilities")
        average = np.mean(found, axis=0).astype(np.float32)
        scores = InferOutput("probabilities", list(average.shape), "FP32")
        scores.set_data_from_numpy(average)
        averaged = InferResponse(result.id, self.name, [scores], parameters=result.parameters)
        return await super().postprocess(averaged, headers)
