"""deploy/kserve and deploy/kubernetes, checked without a cluster: each object's shape, the
probes and shutdown timing of the gateway's containers, the Services' wiring, and every
argument given to the gateway (with those KServe appends) parsed by `gateway serve` itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.__main__ import load_transformer
from tests.deploy import images
from tests.examples.processes import ROOT, load_example

DEPLOY = ROOT / "deploy"
GATEWAY_IMAGE = "inference-hop-gateway"
API_VERSIONS = {
    "InferenceService": "serving.kserve.io/v1beta1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "ConfigMap": "v1",
}
# What KServe's controller appends to a transformer container's args (those not given),
# for an InferenceService `iris` in namespace `default`.
KSERVE_APPENDS = [
    "--model_name", "iris",
    "--predictor_host", "iris-predictor.default",
    "--http_port", "8080",
    "--workers", "1",  # only when the InferenceService sets containerConcurrency
]  # fmt: skip
MANIFESTS = sorted(DEPLOY.glob("kserve/*.yaml")) + sorted(DEPLOY.glob("kubernetes/*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects(directory: str) -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / directory).glob("*.yaml")) for doc in documents(path)]


def named(directory: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects(directory) if o["kind"] == kind}


def pod_specs(directory: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every Deployment and InferenceService component."""
    found = []
    for obj in objects(directory):
        name = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] == "Deployment":
            found.append((name, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "InferenceService":
            for component in ("predictor", "transformer", "explainer"):
                spec = obj["spec"].get(component)
                if spec and "containers" in spec:
                    found.append((f"{name} {component}", spec))
    return found


def gateway_containers(directory: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, container) of every container running the gateway's image."""
    return [
        (where, pod, container)
        for where, pod in pod_specs(directory)
        for container in pod["containers"]
        if GATEWAY_IMAGE in container["image"]
    ]


def command_line(where: str, container: dict[str, Any]) -> list[str]:
    """The container's command line: the image's entrypoint and the args, plus what KServe
    appends to a transformer's."""
    assert "command" not in container, f"{where}: keep the image's entrypoint"
    line = [*images.entrypoint(), *container.get("args", [])]
    if where.startswith("InferenceService") and where.endswith("transformer"):
        given = {arg.split("=", 1)[0] for arg in line}
        for flag, value in zip(KSERVE_APPENDS[::2], KSERVE_APPENDS[1::2], strict=True):
            if flag not in given:
                line += [flag, value]
    return line


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as a container port number."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"no container port named {port!r}")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_objects_are_well_formed(path: Path) -> None:
    for obj in documents(path):
        assert obj["apiVersion"] == API_VERSIONS[obj["kind"]], path
        assert obj["metadata"]["name"], path
        if obj["kind"] == "Deployment":
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{path}: selector matches no pod"


@pytest.mark.parametrize("directory", ["kserve", "kubernetes"])
def test_gateway_args_are_accepted_by_gateway_serve(
    directory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    containers = gateway_containers(directory)
    assert containers, f"deploy/{directory} runs no gateway"
    monkeypatch.chdir(ROOT)  # the image's working directory holds examples/ as the root does
    for where, _, container in containers:
        flags = images.parse_serve(command_line(where, container))
        assert flags.model_name == "iris", where
        if flags.transformer:
            load_transformer(flags.transformer)
            path = ROOT / flags.transformer.rpartition(":")[0]
            assert images.in_context(path), f"{where}: {path} is not in the image"


@pytest.mark.parametrize("directory", ["kserve", "kubernetes"])
def test_probes_ports_and_shutdown(directory: str) -> None:
    for where, pod, container in gateway_containers(directory):
        flags = images.parse_serve(command_line(where, container))
        ports = {int(p["containerPort"]) for p in container["ports"]}
        assert flags.http_port in ports, where
        probes = {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
        for probe, path in probes.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{where}: {probe}"
            assert container_port(container, get["port"]) == flags.http_port, f"{where}: {probe}"
        # SIGTERM comes after the preStop pause; the gateway then drains for --grace_period;
        # Kubernetes kills what is left when terminationGracePeriodSeconds is up.
        pause = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pause[0] == "sleep", where
        needed = float(pause[1]) + flags.grace_period
        assert pod["terminationGracePeriodSeconds"] > needed, where
        assert container["securityContext"]["runAsNonRoot"] is True, where


@pytest.mark.parametrize("directory", ["kserve", "kubernetes"])
def test_features_configmap_is_what_train_writes(
    directory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_example("train").main(["--out", str(tmp_path)])
    written = json.loads((tmp_path / "features.json").read_text())
    [configmap] = named(directory, "ConfigMap").values()
    shipped = json.loads(configmap["data"]["features.json"])
    assert shipped["features"] == written["features"]
    assert shipped["labels"] == written["labels"]
    for key in ("mean", "scale"):
        assert shipped[key] == pytest.approx(written[key], rel=1e-9), key
    # The transformer finds it where the ConfigMap is mounted.
    for where, pod, container in gateway_containers(directory):
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        [volume] = [n for n, v in volumes.items() if v.get("configMap", {}).get("name")]
        assert volumes[volume]["configMap"]["name"] == configmap["metadata"]["name"]
        assert env["FEATURES_FILE"] == f"{mounts[volume]}/features.json", where


def test_kserve_predictor_is_a_stock_sklearn_server() -> None:
    [service] = named("kserve", "InferenceService").values()
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "sklearn"
    assert model["storageUri"]
    [(where, _, container)] = gateway_containers("kserve")
    flags = images.parse_serve(command_line(where, container))
    # The transformer speaks the predictor's protocol (KServe's predictor serves REST).
    assert flags.predictor_protocol == model.get("protocolVersion", "v1")
    # KServe sets these itself; giving them too would point the transformer elsewhere.
    given = {arg.split("=", 1)[0] for arg in container["args"]}
    assert not given & {"--model_name", "--predictor_host", "--http_port"}


def test_kubernetes_services_reach_their_pods() -> None:
    deployments = named("kubernetes", "Deployment")
    services = named("kubernetes", "Service")
    for service in services.values():
        selector = service["spec"]["selector"]
        [target] = [
            d for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        [container] = target["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            container_port(container, port["targetPort"])  # names a port the pod has
    # The transformer's predictor_host is the predictor's Service, on its gRPC port.
    [(where, _, container)] = gateway_containers("kubernetes")
    flags = images.parse_serve(command_line(where, container))
    host, _, port = flags.predictor_host.rpartition(":")
    [entry] = [p for p in services[host]["spec"]["ports"] if p["port"] == int(port)]
    assert (entry["name"], flags.predictor_protocol) == ("grpc", "grpc-v2")
