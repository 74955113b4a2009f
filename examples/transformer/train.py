"""Train the iris classifier this example serves, and write everything each piece needs.

    python examples/transformer/train.py --out /tmp/iris

writes into ``--out``:

- ``model.joblib``: a scikit-learn LogisticRegression trained on *scaled* features, as
  MLServer's and KServe's sklearn servers (and ``predictor_v1.py``) load it;
- ``model-settings.json``: so that ``mlserver start /tmp/iris`` serves it as ``--model_name``;
- ``features.json``: what the transformer needs to turn raw records into the model's input:
  the feature order, the scaler's mean and scale, and the class labels.

Only scikit-learn is needed (no gateway), so this runs in MLServer's image as well.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

# The record fields clients send, in the order the model takes them.
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--model_name", default="iris", help="the name MLServer serves it as")
    args = parser.parse_args(argv)

    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=dict(zip(iris.feature_names, FEATURES, strict=True)))
    raw = frame[FEATURES].to_numpy(dtype="float64")

    # The scaler is applied by the transformer, not by the model: the predictor stays a stock
    # sklearn server, and clients send measurements as they are.
    scaler = StandardScaler().fit(raw)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(raw), iris.target)

    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.out / "model.joblib")
    model_settings = {
        "name": args.model_name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (args.out / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    features = {
        "features": FEATURES,
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "labels": [str(name) for name in iris.target_names],
    }
    (args.out / "features.json").write_text(json.dumps(features, indent=2) + "\n")
    accuracy = model.score(scaler.transform(raw), iris.target)
    print(f"wrote {args.out} (training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
