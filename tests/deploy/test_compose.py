"""docker-compose.yml, checked without Docker: its structure, then every service run as a
local process with the command line its container runs (tests/deploy/local_compose.py), and
requests sent through transformer-a and the inference graph. So the demo cannot drift from
the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml

from gateway.__main__ import load_transformer
from gateway.demo.models import centroid_probabilities, probabilities, standardize
from gateway.graph import load_graph, parse_service_url
from tests.deploy import images
from tests.deploy.local_compose import (
    LocalCompose,
    argv,
    depends_on,
    environment,
    gateway_flags,
    is_gateway,
    is_mlserver,
    mlserver_ports,
)
from tests.deploy.otlp import Collector, collector
from tests.examples.processes import ROOT, post_json, started, wait_ready

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
MODEL = "iris"
ENTRY = "transformer-a"
GRAPH = "graph"
JAEGER_OTLP = "http://jaeger:4318"
RECORDS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.6},
    {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    {"sepal_length": 5.7, "sepal_width": 2.8, "petal_length": 4.1, "petal_width": 1.3},
]


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


SERVICES: dict[str, dict[str, Any]] = load_compose()["services"]
GATEWAYS = sorted(name for name, spec in SERVICES.items() if is_gateway(spec))


def listening(service: str) -> dict[int, str]:
    """The container ports `service` listens on, and what each serves."""
    spec = SERVICES[service]
    if is_gateway(spec):
        flags = gateway_flags(spec)
        return {flags.http_port: "rest", flags.grpc_port: "grpc"}
    if is_mlserver(spec):
        ports = mlserver_ports(spec)
        return {
            ports["MLSERVER_HTTP_PORT"]: "rest",
            ports["MLSERVER_GRPC_PORT"]: "grpc",
            ports["MLSERVER_METRICS_PORT"]: "metrics",
        }
    return {}


def upstreams(service: str) -> dict[str, tuple[str, int, str]]:
    """A gateway's hops: role -> (service, container port, protocol); a graph's are named
    after its services."""
    flags = gateway_flags(SERVICES[service])
    found = {}
    for role, host, protocol in (
        ("predictor", flags.predictor_host, flags.predictor_protocol),
        ("explainer", flags.explainer_host, flags.explainer_protocol),
    ):
        if host:
            name, _, port = host.rpartition(":")
            found[role] = (name, int(port), protocol)
    for entry in flags.service:
        role, _, url = entry.partition("=")
        target = parse_service_url(url)
        name, _, port = target.host.rpartition(":")
        found[role] = (name, int(port), target.protocol)
    return found


# Structure


def test_services() -> None:
    assert {"transformer-a", "transformer-b", "explainer", "predictor", "jaeger"} <= set(SERVICES)
    assert "prometheus" in SERVICES
    assert GATEWAYS == [
        "centroids", "explainer", "graph", "logistic", "transformer-a", "transformer-b",
    ]  # fmt: skip
    assert ONE_SHOT == ["train"]
    # One image for every gateway, built from this repository.
    assert len({SERVICES[name]["image"] for name in GATEWAYS}) == 1
    for name, spec in SERVICES.items():
        if not is_gateway(spec):
            image = spec["image"]
            _, _, tag = image.rpartition(":")
            assert tag not in ("", "latest"), f"{name}: pin a version of {image}"


@pytest.mark.parametrize("service", GATEWAYS)
def test_gateway_command_is_gateway_serve(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    line = argv(SERVICES[service])
    flags = images.parse_serve(line)
    # The image's working directory holds examples/ as the repository's root does.
    monkeypatch.chdir(ROOT)
    if flags.graph:
        services = dict(entry.split("=", 1) for entry in flags.service)
        assert load_graph(flags.graph, services=services).name == MODEL
        assert_in_image(ROOT / flags.graph)
    else:
        assert flags.model_name == MODEL
    if flags.transformer:
        load_transformer(flags.transformer)
        location = flags.transformer.rpartition(":")[0]
        if location.endswith(".py"):
            assert_in_image(ROOT / location)


def assert_in_image(path: Path) -> None:
    """`path` (in the repository) is sent to the build and copied into the image's working
    directory at the same place."""
    assert images.in_context(path), f"{path} is not sent to the image build"
    relative = path.relative_to(ROOT).as_posix()
    copies = [rest.split() for key, rest in images.instructions() if key == "COPY"]
    assert any(
        relative.startswith(sources[0].rstrip("/") + "/") and target == f"./{sources[0]}"
        for *sources, target in copies
    ), f"no COPY puts {relative} in the image's working directory"


def test_hops_form_the_chain() -> None:
    assert upstreams("transformer-a") == {
        "predictor": ("transformer-b", 8080, "v2"),
        "explainer": ("explainer", 8080, "v1"),
    }
    assert upstreams("transformer-b")["predictor"][0] == "predictor"
    assert upstreams("explainer")["predictor"][0] == "predictor"
    for service in GATEWAYS:
        for role, (target, port, protocol) in upstreams(service).items():
            ports = listening(target)
            assert port in ports, f"{service}'s {role} {target}:{port}: nothing listens there"
            assert ports[port] == ("grpc" if protocol == "grpc-v2" else "rest"), (service, role)
            if is_mlserver(SERVICES[target]):
                assert protocol != "v1", "MLServer has no v1"
                if protocol == "v2":  # MLServer has no binary extension
                    assert gateway_flags(SERVICES[service]).predictor_rest_format == "json"


def test_depends_on_what_they_use() -> None:
    for service in GATEWAYS:
        needed = {target for target, _, _ in upstreams(service).values()} | {"jaeger"}
        assert needed <= set(depends_on(SERVICES[service])), service
    # Whoever reads the model volume waits for the training job to have written it.
    for name, spec in SERVICES.items():
        volumes = [str(v).split(":")[0] for v in spec.get("volumes") or []]
        if "models" in volumes and name != "train":
            assert depends_on(spec).get("train") == "service_completed_successfully", name


def test_every_gateway_sends_traces_to_jaeger() -> None:
    for service in GATEWAYS:
        env = environment(SERVICES[service])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == JAEGER_OTLP, service
        assert env["OTEL_SERVICE_NAME"] == service
    jaeger = SERVICES["jaeger"]
    assert environment(jaeger).get("COLLECTOR_OTLP_ENABLED") == "true"
    assert "16686:16686" in jaeger["ports"]


def test_prometheus_scrapes_every_gateway() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        job["job_name"]: {t for group in job["static_configs"] for t in group["targets"]}
        for job in config["scrape_configs"]
    }
    rest_ports = {name: gateway_flags(SERVICES[name]).http_port for name in GATEWAYS}
    # /metrics is on each gateway's REST port.
    assert targets["gateway"] == {f"{name}:{port}" for name, port in rest_ports.items()}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
    for target in set().union(*targets.values()):
        host, _, port = target.rpartition(":")
        assert host in SERVICES, f"prometheus target {target} is no service"
        assert listening(host).get(int(port)) in ("rest", "metrics"), target
    mount = "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in SERVICES["prometheus"]["volumes"]


def test_entry_publishes_its_ports() -> None:
    ports = listening(ENTRY)
    assert sorted(SERVICES[ENTRY]["ports"]) == sorted(f"{p}:{p}" for p in ports)


# The services, run


@dataclass
class Demo:
    local: LocalCompose
    traces: Collector
    model: Any
    spec: dict[str, Any]

    def url(self, service: str, path: str) -> str:
        port = self.local.port(service, gateway_flags(SERVICES[service]).http_port)
        return f"http://127.0.0.1:{port}{path}"

    def grpc(self, service: str) -> str:
        return f"127.0.0.1:{self.local.port(service, gateway_flags(SERVICES[service]).grpc_port)}"

    def labels(self, records: list[dict[str, Any]]) -> list[str]:
        raw = np.array([[r[f] for f in self.spec["features"]] for r in records])
        classes = self.model.predict((raw - self.spec["mean"]) / self.spec["scale"])
        return [self.spec["labels"][c] for c in classes]


# Services run by something other than their command line: Jaeger by an OTLP receiver in
# this process; Prometheus not at all (its scrape configuration is checked above).
STAND_INS = {"jaeger", "prometheus"}
# Jobs that others wait for to have finished.
ONE_SHOT = sorted(
    {
        name
        for spec in SERVICES.values()
        for name, condition in depends_on(spec).items()
        if condition == "service_completed_successfully"
    }
)
SERVERS = [name for name in SERVICES if name not in STAND_INS and name not in ONE_SHOT]


def ready_url(local: LocalCompose, service: str) -> str:
    spec = SERVICES[service]
    if is_gateway(spec):
        port = local.port(service, gateway_flags(spec).http_port)
        return f"http://127.0.0.1:{port}/v2/health/ready"
    # MLServer's server readiness does not wait for its models.
    port = local.port(service, mlserver_ports(spec)["MLSERVER_HTTP_PORT"])
    return f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("compose")
    logs = workdir / "logs"
    logs.mkdir()
    local = LocalCompose(load_compose(), workdir)
    for job in ONE_SHOT:
        command, env = local.command(job)
        subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, check=True, timeout=60)
    models = dict(local.mounts("predictor"))["/models"] / MODEL
    model = joblib.load(models / "model.joblib")
    spec = json.loads((models / "features.json").read_text())
    with ExitStack() as stack:
        traces = stack.enter_context(collector(local.port("jaeger", 4318)))
        processes = {}
        for service in SERVERS:
            command, env = local.command(service)
            # Export spans every 0.1 s instead of 5 s, so the test need not wait.
            env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
            processes[service] = stack.enter_context(started(service, command, logs, env=env))
        try:
            for service, process in processes.items():
                wait_ready(process, ready_url(local, service))
            yield Demo(local, traces, model, spec)
        finally:
            for process in processes.values():
                process.terminate()


def test_predict_v1_through_every_hop(demo: Demo) -> None:
    code, answer = post_json(demo.url(ENTRY, f"/v1/models/{MODEL}:predict"), {"instances": RECORDS})
    assert code == 200, answer
    assert answer == {"predictions": demo.labels(RECORDS)}


def test_infer_v2_through_every_hop(demo: Demo) -> None:
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [len(RECORDS)],
         "data": [record[name] for record in RECORDS]}
        for name in demo.spec["features"]
    ]  # fmt: skip
    code, answer = post_json(demo.url(ENTRY, f"/v2/models/{MODEL}/infer"), {"inputs": inputs})
    assert code == 200, answer
    assert answer["outputs"][0]["data"] == demo.labels(RECORDS)


def test_grpc_through_every_hop(demo: Demo) -> None:
    inputs = []
    for name in demo.spec["features"]:
        tensor = triton_grpc.InferInput(name, [len(RECORDS)], "FP64")
        tensor.set_data_from_numpy(np.array([record[name] for record in RECORDS]))
        inputs.append(tensor)
    client = triton_grpc.InferenceServerClient(demo.grpc(ENTRY))
    try:
        result = client.infer(MODEL, inputs)
    finally:
        client.close()
    assert [label.decode() for label in result.as_numpy("label")] == demo.labels(RECORDS)


def test_explain_through_the_explainer(demo: Demo) -> None:
    url = demo.url(ENTRY, f"/v1/models/{MODEL}:explain")
    code, answer = post_json(url, {"instances": RECORDS})
    assert code == 200, answer
    explanations = answer["explanations"]
    assert [e["label"] for e in explanations] == demo.labels(RECORDS)
    for explanation in explanations:
        assert set(explanation["decisive_features"]) <= set(demo.spec["features"])


def graph_request(rows: list[list[float]]) -> dict[str, Any]:
    """A request to the graph for both classifiers: measurements in centimetres."""
    measurements = {"name": "measurements", "shape": [len(rows), 4], "datatype": "FP32",
                    "data": [value for row in rows for value in row]}  # fmt: skip
    return {"parameters": {"ensemble": True}, "inputs": [measurements]}


FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]]


def test_the_graph_averages_both_classifiers(demo: Demo) -> None:
    url = demo.url(GRAPH, f"/v2/models/{MODEL}/infer")
    code, answer = post_json(url, graph_request(FLOWERS))
    assert code == 200, answer
    outputs = {output["name"]: output for output in answer["outputs"]}
    rows = standardize(np.array(FLOWERS, dtype=np.float32))
    average = (probabilities(rows) + centroid_probabilities(rows)) / 2
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (-1, 3)), average, rtol=1e-5
    )
    labels = [["setosa", "versicolor", "virginica"][i] for i in average.argmax(axis=1)]
    assert outputs["label"]["data"] == labels


def test_every_gateway_serves_metrics(demo: Demo) -> None:
    post_json(demo.url(ENTRY, f"/v1/models/{MODEL}:explain"), {"instances": RECORDS[:1]})
    post_json(demo.url(ENTRY, f"/v1/models/{MODEL}:predict"), {"instances": RECORDS[:1]})
    post_json(demo.url(GRAPH, f"/v2/models/{MODEL}/infer"), graph_request(FLOWERS[:1]))
    for service in GATEWAYS:
        with urllib.request.urlopen(demo.url(service, "/metrics"), timeout=5) as response:
            text = response.read().decode()
        # An HTTP 200, or gRPC's OK (the graph calls logistic over gRPC).
        answered = re.findall(r'gateway_requests_total\{code="(?:200|OK)",model_name="(\w+)"', text)
        assert MODEL in answered, f"{service} counted no answered request:\n{text}"


def test_every_gateway_sends_traces(demo: Demo) -> None:
    post_json(demo.url(ENTRY, f"/v1/models/{MODEL}:explain"), {"instances": RECORDS[:1]})
    post_json(demo.url(ENTRY, f"/v1/models/{MODEL}:predict"), {"instances": RECORDS[:1]})
    post_json(demo.url(GRAPH, f"/v2/models/{MODEL}/infer"), graph_request(FLOWERS[:1]))
    # One request's trace crosses the gateways: context travels with every hop. Each gateway
    # exports in batches, on its own schedule: wait (bounded) for the spans of the requests.
    wanted = (
        {"transformer-a", "transformer-b"},
        {"transformer-a", "explainer"},
        {"graph", "logistic", "centroids"},
    )
    deadline = time.monotonic() + 15
    while True:
        traces: dict[str, set[str]] = {}
        for span in demo.traces.spans():
            traces.setdefault(span.trace_id, set()).add(span.service)
        crossing = [any(w <= services for services in traces.values()) for w in wanted]
        if all(crossing) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(GATEWAYS) <= demo.traces.services()
    assert crossing == [True, True, True], traces


def test_compose_paths_exist() -> None:
    for name, spec in SERVICES.items():
        for volume in spec.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
