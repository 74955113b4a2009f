"""examples/transformer as a user runs it: trained here, in front of MLServer (v2, grpc-v2)
and of the example's own v1 predictor, started both by `gateway serve --transformer` and as a
KServe-style script, asked over REST v2, REST v1 and gRPC. The labels must be the ones the
scikit-learn model gives when called directly."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from sklearn.datasets import load_iris

from tests.examples.processes import (
    EXAMPLE,
    load_example,
    mlserver_env,
    mlserver_script,
    post_json,
    started,
    status,
    wait_ready,
)
from tests.hops.upstreams import free_port

MODEL = "iris"
TRANSFORMER = f"{EXAMPLE / 'transformer.py'}:IrisTransformer"
# How each transformer is started, and which predictor it forwards to over what.
SETUPS = ("v1", "v2", "grpc-v2", "kserve-script")


@dataclass(frozen=True)
class Trained:
    directory: Path
    spec: dict[str, Any]
    model: Any

    def labels(self, records: list[dict[str, Any]]) -> list[str]:
        """What the model says about raw records, called directly, gaps taken as the mean."""
        raw = np.array(
            [[np.nan if r[f] is None else r[f] for f in self.spec["features"]] for r in records],
            dtype=np.float64,
        )
        scaled = (raw - self.spec["mean"]) / self.spec["scale"]
        classes = self.model.predict(np.nan_to_num(scaled, nan=0.0))
        return [self.spec["labels"][c] for c in classes]


@dataclass(frozen=True)
class Transformer:
    setup: str
    rest: str
    grpc: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    directory = tmp_path_factory.mktemp("iris")
    # In this process: a second quicker than a new interpreter importing scikit-learn.
    load_example("train").main(["--out", str(directory), "--model_name", MODEL])
    spec = json.loads((directory / "features.json").read_text())
    return Trained(directory, spec, joblib.load(directory / "model.joblib"))


@pytest.fixture(scope="module")
def transformers(
    trained: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Transformer]]:
    """MLServer, the v1 predictor and four transformers, all started at once."""
    logs = tmp_path_factory.mktemp("logs")
    ml_http, ml_grpc, v1_http = free_port(), free_port(), free_port()
    local = ["--listen_address", "127.0.0.1"]
    predictors = {
        # MLServer has no binary extension: REST v2 bodies to it go as JSON.
        "v1": ["--predictor_host", f"127.0.0.1:{v1_http}", "--predictor_protocol", "v1"],
        "v2": ["--predictor_host", f"127.0.0.1:{ml_http}", "--predictor_protocol", "v2",
               "--predictor_rest_format", "json"],
        "grpc-v2": ["--predictor_host", f"127.0.0.1:{ml_grpc}", "--predictor_protocol", "grpc-v2"],
        # The gateway's own predictor speaks v2 too, with the binary extension.
        "kserve-script": ["--predictor_host", f"127.0.0.1:{v1_http}", "--predictor_protocol",
                          "v2"],
    }  # fmt: skip
    features = {"FEATURES_FILE": str(trained.directory / "features.json")}
    with ExitStack() as stack:
        mlserver = stack.enter_context(
            started(
                "mlserver",
                [mlserver_script(), "start", str(trained.directory)],
                logs,
                env=mlserver_env(ml_http, ml_grpc, free_port()),
                cwd=trained.directory,
            )
        )
        predictor = [sys.executable, str(EXAMPLE / "predictor_v1.py"), "--model_dir",
                     str(trained.directory), "--model_name", MODEL, "--http_port", str(v1_http),
                     "--grpc_port", str(free_port()), *local]  # fmt: skip
        v1 = stack.enter_context(started("predictor_v1", predictor, logs))
        found: dict[str, Transformer] = {}
        processes = []
        for setup in SETUPS:
            http, grpc = free_port(), free_port()
            ports = ["--http_port", str(http), "--grpc_port", str(grpc), *local]
            if setup == "kserve-script":
                command = [sys.executable, str(EXAMPLE / "transformer.py"),
                           "--features_file", features["FEATURES_FILE"]]  # fmt: skip
                env = None
            else:
                command = [sys.executable, "-m", "gateway", "serve", "--transformer", TRANSFORMER]
                env = features
            argv = [*command, "--model_name", MODEL, *predictors[setup], *ports,
                    # Ready only once the predictor is: the tests can start right away.
                    "--enable_predictor_health_check"]  # fmt: skip
            processes.append(stack.enter_context(started(setup, argv, logs, env=env)))
            found[setup] = Transformer(setup, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}")
        wait_ready(mlserver, f"http://127.0.0.1:{ml_http}/v2/models/{MODEL}/ready")
        wait_ready(v1, f"http://127.0.0.1:{v1_http}/v1/models/{MODEL}")
        for process, transformer in zip(processes, found.values(), strict=True):
            wait_ready(process, f"{transformer.rest}/v2/health/ready")
        try:
            yield found
        finally:
            for process in [mlserver, v1, *processes]:
                process.terminate()


@pytest.fixture(params=SETUPS)
def transformer(
    request: pytest.FixtureRequest, transformers: dict[str, Transformer]
) -> Transformer:
    return transformers[request.param]


def records() -> list[dict[str, Any]]:
    """Raw iris records as a client has them: every tenth flower, and one odd one."""
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [dict(zip(names, map(float, row), strict=True)) for row in iris.data[::10]]
    rows.append({"sepal_length": 6.1, "sepal_width": 2.2, "petal_length": 4.9, "petal_width": 1.6})
    return rows


def columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in names}


def test_rest_v2_json(transformer: Transformer, trained: Trained) -> None:
    rows = records()
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [len(rows)], "data": values.tolist()}
        for name, values in columns(rows, trained.spec["features"]).items()
    ]
    code, answer = post_json(
        f"{transformer.rest}/v2/models/{MODEL}/infer", {"id": "r-1", "inputs": inputs}
    )
    assert code == 200, answer
    assert answer["id"] == "r-1"
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("label", "BYTES", [len(rows)])
    assert output["data"] == trained.labels(rows)


def test_rest_v2_binary_tritonclient(transformer: Transformer, trained: Trained) -> None:
    rows = records()
    inputs = []
    # [N, 1] columns, as tabular clients often send them, with the binary extension.
    for name, values in columns(rows, trained.spec["features"]).items():
        tensor = triton_http.InferInput(name, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(values.reshape(-1, 1), binary_data=True)
        inputs.append(tensor)
    client = triton_http.InferenceServerClient(transformer.rest.removeprefix("http://"))
    try:
        result = client.infer(
            MODEL, inputs, outputs=[triton_http.InferRequestedOutput("label", binary_data=True)]
        )
    finally:
        client.close()
    labels = result.as_numpy("label")
    assert [label.decode() for label in labels] == trained.labels(rows)


def test_grpc_tritonclient(transformer: Transformer, trained: Trained) -> None:
    rows = records()
    inputs = []
    for name, values in columns(rows, trained.spec["features"]).items():
        tensor = triton_grpc.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    client = triton_grpc.InferenceServerClient(transformer.grpc)
    try:
        assert client.is_model_ready(MODEL)
        result = client.infer(MODEL, inputs, request_id="g-1")
    finally:
        client.close()
    assert result.get_response().id == "g-1"
    assert [label.decode() for label in result.as_numpy("label")] == trained.labels(rows)


def test_rest_v1_records(transformer: Transformer, trained: Trained) -> None:
    rows = records()
    # A gap (null) is filled with the training mean; extra fields are ignored.
    rows[0] = {**rows[0], "petal_width": None, "id": "flower-0"}
    code, answer = post_json(f"{transformer.rest}/v1/models/{MODEL}:predict", {"instances": rows})
    assert code == 200, answer
    assert answer == {"predictions": trained.labels(rows)}


def test_bad_records_are_a_400(transformers: dict[str, Transformer]) -> None:
    url = f"{transformers['grpc-v2'].rest}/v1/models/{MODEL}:predict"
    code, answer = post_json(url, {"instances": [{"sepal_length": 5.1}]})
    assert code == 400
    assert "records lack sepal_width, petal_length, petal_width" in answer["error"]
    code, answer = post_json(url, {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert code == 400
    assert "sepal_length" in answer["error"]


def test_metadata_names_the_features(transformers: dict[str, Transformer]) -> None:
    url = f"{transformers['v2'].rest}/v2/models/{MODEL}"
    assert status(url) == 200
    client = triton_grpc.InferenceServerClient(transformers["v2"].grpc)
    try:
        metadata = client.get_model_metadata(MODEL, as_json=True)
    finally:
        client.close()
    assert [i["name"] for i in metadata["inputs"]] == [
        "sepal_length", "sepal_width", "petal_length", "petal_width"
    ]  # fmt: skip
    assert metadata["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": ["-1"]}]
