"""``gateway serve --graph`` as a real process in front of real upstream processes: our own
server (tests/apps/graph_models.py) over REST v1, REST v2 and gRPC, and MLServer. The graph
answers at ``/`` as KServe's router does and under the Open Inference Protocol paths (a
tritonclient client calls it), with retries, upstream statuses, one trace, Server-Timing and
per-step metrics; a graph that cannot run is refused at start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from gateway import InferInput, InferRequest, InferResponse
from gateway._proto import SERVICE_NAME
from gateway.trace_cli import fetch
from gateway.waterfall import merge
from tests.e2e.support import start_servers
from tests.hops.test_hop_mlserver import FEATURES, MODEL, MLServer, mlserver  # noqa: F401
from tests.hops.upstreams import free_port
from tests.server.procs import ROOT, ServerProcess

# KServe's model chainer: the first model's answer is the second one's request.
CHAIN = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: chain}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
      - {name: a, serviceName: double}
      - {name: b, serviceName: triple, data: $response}
"""
# One chain over every protocol: gRPC, then REST v1, then REST v2.
BRIDGE = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: bridge}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
      - {name: a, serviceName: grpc-double}
      - {name: b, serviceName: double, data: $response}
      - {name: c, serviceName: v2-triple, data: $response}
"""
# A Switch on a field of the request, one branch a nested Ensemble.
SWITCH = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: switch}
spec:
  nodes:
    root:
      routerType: Switch
      steps:
      - {serviceName: dog, condition: '[@this].#(kind=="dog")'}
      - {serviceName: cat, condition: '[@this].#(kind==cat)'}
      - {nodeName: both, condition: '[@this].#(kind=="both")'}
      - {nodeName: both, condition: parameters.ensemble}
    both:
      routerType: Ensemble
      steps:
      - {name: dog, serviceName: dog}
      - {name: cat, serviceName: cat}
"""
# Each failure a request's parameters ask for: a Hard step that answers 503, a Soft one that
# does in a Sequence, an upstream that needs a retry, one slower than serviceClient allows.
FAULTS = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: faults}
spec:
  routerTimeouts: {serviceClient: 1}
  nodes:
    root:
      routerType: Switch
      steps:
      - {nodeName: hard, condition: '[@this].#(parameters.case=="hard")'}
      - {nodeName: soft, condition: '[@this].#(parameters.case=="soft")'}
      - {serviceName: flaky, condition: '[@this].#(parameters.case=="retry")'}
      - {serviceName: slow, condition: '[@this].#(parameters.case=="slow")'}
    hard:
      routerType: Ensemble
      steps:
      - {name: busy, serviceName: busy, dependency: Hard}
      - {name: ok, serviceName: double}
    soft:
      routerType: Sequence
      steps:
      - {name: busy, serviceName: busy}
      - {name: ok, serviceName: double}
"""
# KServe's canary: most requests to the stable model, a share to the new one.
CANARY = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: canary}
spec:
  nodes:
    root:
      routerType: Splitter
      steps:
      - {name: stable, serviceName: dog, weight: 80}
      - {name: canary, serviceName: cat, weight: 20}
"""
# A Sequence that stops early: the second step runs only when the first answered above 10.
EARLY = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: early}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
      - {name: a, serviceName: double}
      - {name: b, serviceName: triple, data: $response, condition: 'predictions.#(>10)'}
"""
GRAPHS = {
    "chain": CHAIN, "bridge": BRIDGE, "switch": SWITCH, "faults": FAULTS, "canary": CANARY,
    "early": EARLY,
}  # fmt: skip
GATEWAY_FLAGS = (
    "--http_port", "0", "--grpc_port", "0", "--enable_latency_logging", "false",
    "--trace_buffer", "200", "--predictor_request_retries", "2",
    "--retry_backoff_initial", "0.01", "--retry_backoff_max", "0.05",
)  # fmt: skip


@dataclass(frozen=True)
class Served:
    upstream: ServerProcess
    gateways: dict[str, ServerProcess]

    def url(self, graph: str, path: str = "/") -> str:
        return f"{self.gateways[graph].base_url}{path}"

    def grpc(self, graph: str) -> str:
        return f"127.0.0.1:{self.gateways[graph].grpc_port}"


def service_flags(upstream: ServerProcess) -> list[str]:
    rest, grpc_ = f"127.0.0.1:{upstream.http_port}", f"127.0.0.1:{upstream.grpc_port}"
    urls = {
        **{m: f"http://{rest}/v1/models/{m}:predict" for m in
           ("double", "triple", "dog", "cat", "busy", "flaky", "slow")},
        "grpc-double": f"grpc://{grpc_}/double",
        "v2-triple": f"http://{rest}/v2/models/triple/infer",
    }  # fmt: skip
    return [flag for name, url in urls.items() for flag in ("--service", f"{name}={url}")]


def gateway_command(graph: Path, *flags: str) -> list[str]:
    return ["gateway", "serve", "--graph", str(graph), *GATEWAY_FLAGS, *flags]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("graphs")
    with ExitStack() as stack:
        (upstream,) = start_servers(
            stack,
            ["tests.apps.graph_models", "--http_port", "0", "--grpc_port", "0",
             "--trace_buffer", "200", "--enable_latency_logging", "false"],
        )  # fmt: skip
        commands = []
        for name, text in GRAPHS.items():
            (directory / f"{name}.yaml").write_text(text)
            commands.append(gateway_command(directory / f"{name}.yaml", *service_flags(upstream)))
        gateways = start_servers(stack, *commands)
        yield Served(upstream, dict(zip(GRAPHS, gateways, strict=True)))


def post(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST `body` as JSON: the status, the headers (lower-case names), the parsed answer."""
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response
            return response.status, _headers(answer), orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _headers(exc), orjson.loads(exc.read())


def _headers(response: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in response.headers.items()}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fp32(values: list[float]) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.array(values, dtype=np.float32)


# KServe's router's paths and answers


def test_root_answers_the_root_nodes_json(served: Served) -> None:
    status, headers, answer = post(served.url("chain"), {"instances": [1, 2]})
    assert (status, answer) == (200, {"predictions": [6, 12]})
    assert headers["content-type"] == "application/json"


def test_get_root_is_still_liveness(served: Served) -> None:
    assert get(served.url("chain")) == (200, '{"status":"alive"}')


def test_v1_path_under_the_graphs_name(served: Served) -> None:
    url = served.url("chain", "/v1/models/chain:predict")
    assert post(url, {"instances": [1, 2]})[2] == {"predictions": [6, 12]}


def test_a_v1_answer_is_the_next_v2_or_grpc_steps_instances(served: Served) -> None:
    # x2 over gRPC, x2 over REST v1 (which gets the v1 answer as it is), x3 over REST v2
    # (which gets the v1 answer's predictions as its instances).
    status, _, answer = post(served.url("bridge"), {"instances": [1.5, -2.0]})
    assert (status, answer) == (200, {"predictions": [18.0, -24.0]})


def test_switch_on_a_field(served: Served) -> None:
    url = served.url("switch")
    assert post(url, {"kind": "dog"})[2] == {"predictions": ["dog"]}
    assert post(url, {"kind": "cat"})[2] == {"predictions": ["cat"]}
    assert post(url, {"kind": "both"})[2] == {
        "dog": {"predictions": ["dog"]},
        "cat": {"predictions": ["cat"]},
    }


def test_switch_without_a_match_is_kserves_404(served: Served) -> None:
    status, _, answer = post(served.url("switch"), {"kind": "bird"})
    assert status == 404
    assert answer == {
        "error": "Failed to process request",
        "cause": "None of the routes matched with the switch condition",
    }


def test_canary_splitter_shares_follow_the_weights(served: Served) -> None:
    total = 200
    answers = [post(served.url("canary"), {"instances": [i]})[2] for i in range(total)]
    picked = [answer["predictions"][0] for answer in answers]
    assert set(picked) <= {"dog", "cat"}
    # 20 % to the canary: 40 expected; outside six standard deviations about once in 10**9.
    sigma = (total * 0.2 * 0.8) ** 0.5
    assert abs(picked.count("cat") - total * 0.2) < 6 * sigma


def test_a_sequence_stops_early_when_a_condition_does_not_match(served: Served) -> None:
    url = served.url("early")
    _, metrics = get(served.url("early", "/metrics"))
    triple_calls = sample(metrics, "gateway_hop_seconds_count", {"hop": "triple"})
    # 1 doubled is 2: not above 10, so the Sequence answers the first step's answer.
    assert post(url, {"instances": [1]})[:3:2] == (200, {"predictions": [2]})
    _, metrics = get(served.url("early", "/metrics"))
    assert sample(metrics, "gateway_hop_seconds_count", {"hop": "triple"}) == triple_calls
    # 6 doubled is 12: the second step runs.
    assert post(url, {"instances": [6]})[:3:2] == (200, {"predictions": [36]})


def test_root_refuses_a_body_that_is_not_a_json_object(served: Served) -> None:
    status, _, answer = post(served.url("switch"), [1, 2])
    assert status == 400
    assert answer["error"] == "Failed to process request"
    assert "JSON object" in answer["cause"]


# The Open Inference Protocol paths: tritonclient calls a graph as a model


def test_tritonclient_grpc_calls_a_graph_across_protocols(served: Served) -> None:
    tensor = triton_grpc.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(fp32([1.5, -2.0, 0.25]))
    client = triton_grpc.InferenceServerClient(served.grpc("bridge"))
    try:
        result = client.infer("bridge", [tensor])
    finally:
        client.close()
    response = result.get_response()
    assert response.model_name == "bridge"
    # x2 over gRPC, x2 over REST v1 (which names no tensor, and types every number FP64),
    # x3 over REST v2.
    (output,) = response.outputs
    assert (output.name, output.datatype) == ("input-0", "FP64")
    np.testing.assert_array_equal(result.as_numpy("input-0"), [18.0, -24.0, 3.0])


def test_tritonclient_http_binary_calls_a_graph(served: Served) -> None:
    tensor = triton_http.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(fp32([1.0, 2.0]), binary_data=True)
    client = triton_http.InferenceServerClient(served.gateways["bridge"].base_url[7:])
    try:
        assert client.is_model_ready("bridge")
        output = triton_http.InferRequestedOutput("input-0", binary_data=True)
        result = client.infer("bridge", [tensor], outputs=[output])
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("input-0"), [12.0, 24.0])


def test_v2_ensemble_is_one_response_of_every_steps_outputs(served: Served) -> None:
    # A v2 request's parameters are what a condition can look at beside its tensors.
    body = {
        "parameters": {"ensemble": True},
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
    }
    status, _, answer = post(served.url("switch", "/v2/models/switch/infer"), body)
    assert status == 200, answer
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    # A v1 answer names no tensor: the hop names it input-0.
    assert outputs == {"dog.input-0": ["dog"], "cat.input-0": ["cat"]}


# Failures, retries and deadlines, as for any hop


def case(name: str) -> dict[str, Any]:
    return {"parameters": {"case": name}, "instances": [1, 2]}


def test_a_hard_step_answering_503_is_a_503(served: Served) -> None:
    status, _, answer = post(served.url("faults"), case("hard"))
    # The failing step's own body, as KServe's router passes it on, with its status.
    assert (status, answer) == (503, {"error": "busy, try again"})
    status, _, answer = post(served.url("faults", "/v2/models/faults/infer"), v2_case("hard"))
    assert status == 503, answer
    assert "busy, try again" in answer["error"]


def test_a_hard_step_answering_503_is_unavailable_over_grpc(served: Served) -> None:
    tensor = triton_grpc.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(fp32([1.0, 2.0]))
    client = triton_grpc.InferenceServerClient(served.grpc("faults"))
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("faults", [tensor], parameters={"case": "hard"})
    finally:
        client.close()
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert "busy, try again" in str(info.value.message())


def v2_case(name: str) -> dict[str, Any]:
    return {
        "parameters": {"case": name},
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
    }


def test_a_soft_failure_does_not_stop_a_sequence(served: Served) -> None:
    assert post(served.url("faults"), case("soft"))[:3:2] == (200, {"predictions": [2, 4]})


def test_a_step_is_retried(served: Served) -> None:
    status, _, answer = post(served.url("faults"), case("retry"))
    assert (status, answer) == (200, {"predictions": ["recovered"]})
    _, metrics = get(served.url("faults", "/metrics"))
    assert sample(metrics, "gateway_hop_retries_total", {"hop": "flaky"}) >= 1


def test_a_step_slower_than_service_client_is_a_504(served: Served) -> None:
    status, _, answer = post(served.url("faults"), case("slow"))
    assert status == 504, answer
    # The service client's 1 s, less what went by before the call (a millisecond, on a busy
    # machine), is the timeout the step had.
    match = re.search(r"did not answer within (\d\.\d+) s", answer["cause"])
    assert match is not None, answer
    assert 0.9 <= float(match.group(1)) <= 1.0, answer


# Observability: one trace, Server-Timing, per-step metrics


TRACE_ID = "5b8efff798038103d269b633813fc60c"


def test_one_trace_across_every_step(served: Served) -> None:
    traceparent = f"00-{TRACE_ID}-eee19b7ec3c1b174-01"
    url = served.url("bridge", "/v2/models/bridge/infer")
    status, _, answer = post(url, v2_case("none"), {"traceparent": traceparent})
    assert status == 200, answer
    sources = [fetch(served.gateways["bridge"].base_url), fetch(served.upstream.base_url)]
    (trace,) = [t for t in merge(sources) if t["trace_id"] == TRACE_ID]
    names = [s["name"] for s in trace["spans"]]
    for name in ("node root", "step root.a", "step root.b", "step root.c"):
        assert name in names, names
    for hop in ("grpc-double", "double", "v2-triple"):
        assert f"hop {hop}" in names, names
    # Each step's upstream answered in the same trace: three SERVER spans upstream.
    upstream_servers = [s for s in trace["spans"] if s["kind"] == "SERVER"]
    assert len(upstream_servers) == 4, names  # the gateway's own, and one per step
    by_id = {s["span_id"]: s for s in trace["spans"]}
    for span in upstream_servers:
        parent = by_id.get(span["parent_id"] or "")
        assert parent is None or parent["kind"] == "CLIENT"


def test_server_timing_has_every_node_step_and_hop(served: Served) -> None:
    _, headers, _ = post(served.url("chain"), {"instances": [1]})
    entries = {entry.split(";")[0].strip() for entry in headers["server-timing"].split(",")}
    assert {"node.root", "step.root.a", "step.root.b", "hop.double", "hop.triple"} <= entries


def test_server_timing_over_grpc(served: Served) -> None:
    request = InferRequest("chain", [InferInput.from_raw("x", [1], "FP32", fp32([1]).tobytes())])
    with grpc.insecure_channel(served.grpc("chain")) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
        answer, state = call.with_call(request.to_grpc_bytes(), timeout=30)
    assert InferResponse.from_grpc_bytes(answer).outputs[0].as_numpy().tolist() == [6.0]
    timing = dict(state.trailing_metadata())["server-timing"]
    assert "step.root.a;" in timing
    assert "hop.triple;" in timing


def test_per_step_metrics(served: Served) -> None:
    post(served.url("chain"), {"instances": [1]})
    _, metrics = get(served.url("chain", "/metrics"))
    for step in ("a", "b"):
        labels = {"graph": "chain", "node": "root", "step": step, "outcome": "ok"}
        assert sample(metrics, "gateway_graph_step_seconds_count", labels) >= 1
    assert sample(metrics, "gateway_hop_seconds_count", {"hop": "triple", "outcome": "ok"}) >= 1
    # Requests at / are counted under the graph's name.
    assert sample(metrics, "gateway_requests_total", {"model_name": "chain", "code": "200"}) >= 1


def sample(metrics: str, name: str, labels: dict[str, str]) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        found.value
        for family in text_string_to_metric_families(metrics)
        for found in family.samples
        if found.name == name and labels.items() <= found.labels.items()
    )


# Start-up: readiness, refusals


def test_not_ready_until_every_service_is(tmp_path: Path, served: Served) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(CHAIN)
    closed = free_port()
    flags = ["--service", f"double=http://127.0.0.1:{closed}/v1/models/double:predict",
             *service_flags(served.upstream)[2:]]  # fmt: skip
    with ExitStack() as stack:
        (gateway,) = start_servers(stack, gateway_command(graph, *flags), ready=False)
        assert get(f"{gateway.base_url}/v2/health/ready")[0] == 503
        assert get(f"{gateway.base_url}/v2/models/chain/ready")[0] == 503
        status, _, answer = post(gateway.base_url, {"instances": [1]})
        assert status == 503, answer
        assert "cannot connect to the double" in answer["cause"]


REFUSED = {
    "unknown node": (
        "nodes: {root: {routerType: Sequence, steps: [{nodeName: nowhere}]}}",
        "node 'root' steps[0]: unknown node 'nowhere'",
    ),
    "weights": (
        "nodes: {root: {routerType: Splitter, steps: [{serviceName: double, weight: 60},"
        " {serviceName: triple, weight: 30}]}}",
        "node 'root': Splitter weights add up to 90, not 100",
    ),
    "cycle": (
        "nodes: {root: {routerType: Sequence, steps: [{nodeName: a}]},"
        " a: {routerType: Sequence, steps: [{name: back, nodeName: root}]}}",
        "node 'a' steps[0] ('back'): nodeName 'root' makes a cycle",
    ),
    "condition": (
        "nodes: {root: {routerType: Switch, steps: [{serviceName: dog, condition: '#(a=='}]}}",
        "node 'root' steps[0]: condition '#(a==' cannot be parsed",
    ),
    "service without a URL": (
        "nodes: {root: {routerType: Sequence, steps: [{name: s, serviceName: nobody}]}}",
        "node 'root' steps[0] ('s'): no URL for service 'nobody'",
    ),
    "no root": (
        "nodes: {main: {routerType: Sequence, steps: [{serviceName: double}]}}",
        "has no node named 'root'",
    ),
}


@pytest.mark.parametrize("case_name", sorted(REFUSED))
def test_an_invalid_graph_is_refused_at_start(tmp_path: Path, case_name: str) -> None:
    text, message = REFUSED[case_name]
    graph = tmp_path / "graph.yaml"
    graph.write_text(text)
    services = [f"--service={name}=http://127.0.0.1:1/v1/models/{name}:predict"
                for name in ("double", "triple", "dog")]  # fmt: skip
    result = run_gateway("--graph", str(graph), *services)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("gateway: error: "), line
    assert message in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--service", "double"], "--service must be NAME=URL, not 'double'"),
        (["--service", "double=http://h/v1/models/double"], "names no model"),
        (["--predictor_host", "h:80"], "--graph and --predictor_host"),
    ],
)
def test_bad_service_flags_are_refused_at_start(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(CHAIN)
    result = run_gateway("--graph", str(graph), "--service", "triple=grpc://h/triple", *flags)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def run_gateway(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", *flags, "--http_port", "0", "--grpc_port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


# MLServer


def test_a_graph_over_mlserver(tmp_path: Path, mlserver: MLServer) -> None:  # noqa: F811
    graph = tmp_path / "iris.yaml"
    graph.write_text(
        "metadata: {name: iris}\n"
        "apiVersion: serving.kserve.io/v1alpha1\nkind: InferenceGraph\n"
        "spec: {nodes: {root: {routerType: Ensemble, steps: "
        "[{name: rest, serviceName: rest}, {name: grpc, serviceName: grpc}]}}}\n"
    )
    flags = [
        "--service", f"rest=http://{mlserver.http}/v2/models/{MODEL}/infer",
        "--service", f"grpc=grpc://{mlserver.grpc}/{MODEL}",
        # MLServer has no binary extension.
        "--predictor_rest_format", "json",
    ]  # fmt: skip
    with ExitStack() as stack:
        (gateway,) = start_servers(stack, gateway_command(graph, *flags))
        tensor = triton_grpc.InferInput("features", list(FEATURES.shape), "FP64")
        tensor.set_data_from_numpy(FEATURES)
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
        try:
            result = client.infer("iris", [tensor])
        finally:
            client.close()
    expected = mlserver.model.predict(FEATURES)
    np.testing.assert_array_equal(result.as_numpy("rest.predict").ravel(), expected)
    np.testing.assert_array_equal(result.as_numpy("grpc.predict").ravel(), expected)
