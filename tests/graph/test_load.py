"""Loading a KServe InferenceGraph: the values it gives, and each graph refused at load with
its one-line message naming the node and the step."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.graph import (
    Dependency,
    Graph,
    GraphSpecError,
    RouterTimeouts,
    RouterType,
    StepTarget,
    load_graph,
    parse_graph,
)
from gateway.hops.mock import MockHop

# KServe's overview example (Sequence with conditions), nested with a Switch, an Ensemble and a
# canary Splitter, as a user would write it for KServe.
GRAPH_YAML = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: combined-nodes
spec:
  resources:            # the router pod's: not ours, ignored
    requests: {cpu: 100m}
  minReplicas: 1
  routerTimeouts:
    serverRead: 30
    serverWrite: 60
    serverIdle: 120
    serviceClient: 15
  nodes:
    root:
      routerType: Sequence
      steps:
      - serviceName: preprocessor
        name: preprocess_step
      - nodeName: choose
        name: split
        data: $response
        dependency: Hard
      - nodeName: parallel
        condition: "[@this].#(predictions.0.class==\\"news\\")"
    choose:
      routerType: Splitter
      steps:
      - serviceName: model-a
        weight: 80
      - serviceUrl: grpcs://model-b.default:9000/model-b
        weight: 20
    parallel:
      routerType: Ensemble
      steps:
      - serviceName: model-a
        name: a
      - nodeName: pick
        name: picked
    pick:
      routerType: Switch
      steps:
      - serviceUrl: http://upper.default/v2/models/upper/infer
        condition: "[@this].#(instances.0.data>0.9)"
      - serviceUrl: http://lower.default/v1/models/lower:predict
        condition: "[@this].#(decision_picker==ERROR)"
"""
SERVICES = {
    "preprocessor": "http://127.0.0.1:8001/v1/models/pre:predict",
    "model-a": "http://127.0.0.1:8002/v2/models/a/infer",
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_resource(tmp_path: Path) -> None:
    graph = load_graph(write(tmp_path, "graph.yaml", GRAPH_YAML), services=SERVICES)
    assert graph.name == "combined-nodes"
    assert graph.router_timeouts == RouterTimeouts(30, 60, 120, 15)
    assert {name: node.router_type for name, node in graph.nodes.items()} == {
        "root": RouterType.SEQUENCE,
        "choose": RouterType.SPLITTER,
        "parallel": RouterType.ENSEMBLE,
        "pick": RouterType.SWITCH,
    }
    first, split, parallel = graph.root.steps
    assert (first.name, first.service_name, first.data, first.dependency) == (
        "preprocess_step", "preprocessor", "$request", Dependency.SOFT
    )  # fmt: skip
    assert first.target == StepTarget(SERVICES["preprocessor"], "v1", "127.0.0.1:8001", "pre")
    assert (split.node_name, split.data, split.hard) == ("choose", "$response", True)
    assert parallel.key == "2"  # no name: the index, as KServe keys an Ensemble's answer
    assert parallel.condition is not None
    assert parallel.condition.text == '[@this].#(predictions.0.class=="news")'
    assert [s.weight for s in graph.nodes["choose"].steps] == [80, 20]
    assert graph.targets() == {
        "preprocessor": first.target,
        "model-a": StepTarget(SERVICES["model-a"], "v2", "127.0.0.1:8002", "a"),
        "grpcs://model-b.default:9000/model-b": StepTarget(
            "grpcs://model-b.default:9000/model-b",
            "grpc-v2",
            "model-b.default:9000",
            "model-b",
            use_ssl=True,
        ),
        "http://upper.default/v2/models/upper/infer": StepTarget(
            "http://upper.default/v2/models/upper/infer", "v2", "upper.default:80", "upper"
        ),
        "http://lower.default/v1/models/lower:predict": StepTarget(
            "http://lower.default/v1/models/lower:predict", "v1", "lower.default:80", "lower"
        ),
    }


def test_json_resource_and_bare_spec(tmp_path: Path) -> None:
    import yaml

    resource = yaml.safe_load(GRAPH_YAML)
    from_json = load_graph(write(tmp_path, "graph.json", json.dumps(resource)), services=SERVICES)
    assert from_json == load_graph(write(tmp_path, "graph.yaml", GRAPH_YAML), services=SERVICES)
    # What KServe's router takes as --graph-json: the spec alone, named by the caller.
    bare = parse_graph(resource["spec"], services=SERVICES, name="combined-nodes")
    assert bare == from_json


def test_service_names_left_unresolved_without_services() -> None:
    graph = parse_graph(resource_with(steps=[{"serviceName": "a"}]))
    assert graph.targets() == {"a": None}


def resource_with(
    steps: list[dict[str, Any]] | None = None,
    router: str = "Sequence",
    **nodes: dict[str, Any],
) -> dict[str, Any]:
    root = {"routerType": router, "steps": steps or [{"serviceName": "a"}]}
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "g"},
        "spec": {"nodes": {"root": root, **nodes}},
    }


URL = "http://127.0.0.1:9/v1/models/m:predict"

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown node",
        resource_with([{"name": "next", "nodeName": "nope"}]),
        "node 'root' steps[0] ('next'): unknown node 'nope'",
    ),
    (
        "missing root",
        {
            **resource_with(),
            "spec": {"nodes": {"main": {"routerType": "Sequence", "steps": [{"serviceUrl": URL}]}}},
        },
        "graph 'g' has no node named 'root', where every request starts",
    ),
    (
        "weights that do not add up",
        resource_with(
            [{"serviceUrl": URL, "weight": 70}, {"serviceUrl": URL, "weight": 20}],
            router="Splitter",
        ),
        "node 'root': Splitter weights add up to 90, not 100",
    ),
    (
        "a weight missing",
        resource_with(
            [{"serviceUrl": URL, "weight": 100}, {"name": "b", "serviceUrl": URL}],
            router="Splitter",
        ),
        "node 'root' steps[1] ('b'): a Splitter step needs a weight",
    ),
    (
        "a weight out of range",
        resource_with([{"serviceUrl": URL, "weight": 120}], router="Splitter"),
        "node 'root' steps[0]: weight must be a whole number from 0 to 100, not 120",
    ),
    (
        "a cycle",
        resource_with(
            [{"nodeName": "a"}],
            a={"routerType": "Sequence", "steps": [{"serviceUrl": URL}, {"nodeName": "b"}]},
            b={"routerType": "Ensemble", "steps": [{"name": "back", "nodeName": "root"}]},
        ),
        "node 'b' steps[0] ('back'): nodeName 'root' makes a cycle: root -> a -> b -> root",
    ),
    (
        "a node that calls itself",
        resource_with(
            [{"serviceUrl": URL}],
            loop={"routerType": "Switch", "steps": [{"nodeName": "loop", "condition": "x"}]},
        ),
        "node 'loop' steps[0]: nodeName 'loop' makes a cycle: loop -> loop",
    ),
    (
        "a step with no target",
        resource_with([{"name": "empty", "data": "$request"}]),
        "node 'root' steps[0] ('empty') names no target: give serviceName, serviceUrl or nodeName",
    ),
    (
        "a step with two targets",
        resource_with([{"serviceName": "a", "serviceUrl": URL}]),
        "node 'root' steps[0] gives serviceName and serviceUrl: a step has one target",
    ),
    (
        "a service URL that names no model",
        resource_with([{"serviceUrl": "http://model.default.svc.cluster.local"}]),
        "node 'root' steps[0]: service URL 'http://model.default.svc.cluster.local' names no "
        "model: use http[s]://HOST[:PORT]/v1/models/NAME:predict, "
        "http[s]://HOST[:PORT]/v2/models/NAME/infer or grpc[s]://HOST[:PORT]/NAME",
    ),
    (
        "two steps with one name",
        resource_with([{"name": "s", "serviceUrl": URL}, {"name": "s", "serviceUrl": URL}]),
        "node 'root' steps[1] ('s'): another step of the node has that name",
    ),
    (
        "a Switch step without a condition",
        resource_with(
            [{"serviceUrl": URL, "condition": "a"}, {"serviceUrl": URL}], router="Switch"
        ),
        "node 'root' steps[1]: a Switch step needs a condition",
    ),
    (
        "a condition on the first step of a Sequence",
        resource_with([{"name": "first", "serviceUrl": URL, "condition": "predictions"}]),
        "node 'root' steps[0] ('first'): the first step of a Sequence has no previous answer "
        "for its condition to test",
    ),
    (
        "an unknown router type",
        resource_with(router="Parallel"),
        "node 'root': routerType must be one of Sequence, Switch, Ensemble, Splitter, not "
        "'Parallel'",
    ),
    (
        "data that is neither $request nor $response",
        resource_with([{"serviceUrl": URL}, {"serviceUrl": URL, "data": "$response.predictions"}]),
        "node 'root' steps[1]: data must be $request or $response, not '$response.predictions'",
    ),
    (
        "an unknown dependency",
        resource_with([{"serviceUrl": URL, "dependency": "hard"}]),
        "node 'root' steps[0]: dependency must be Soft or Hard, not 'hard'",
    ),
    (
        "a misspelt field",
        resource_with([{"serviceUrl": URL, "conditon": "x"}]),
        "node 'root' steps[0]: unknown field 'conditon'",
    ),
    (
        "a node without steps",
        resource_with(empty={"routerType": "Ensemble", "steps": []}),
        "node 'empty' needs a list of steps",
    ),
    (
        "another kind of resource",
        {**resource_with(), "kind": "InferenceService"},
        "expected apiVersion 'serving.kserve.io/v1alpha1' and kind 'InferenceGraph', got "
        "'serving.kserve.io/v1alpha1' and 'InferenceService'",
    ),
    (
        "a name KServe refuses",
        {**resource_with(), "metadata": {"name": "My_Graph"}},
        "graph name 'My_Graph' must be lower-case letters, digits and '-', starting with a "
        "letter (as KServe requires)",
    ),
    (
        "a bad router timeout",
        {
            **resource_with(),
            "spec": {**resource_with()["spec"], "routerTimeouts": {"serviceClient": 0}},
        },
        "spec.routerTimeouts.serviceClient must be a number of seconds above 0",
    ),
]


@pytest.mark.parametrize(("resource", "message"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])  # fmt: skip
def test_invalid_graph_is_refused(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphSpecError) as info:
        parse_graph(copy.deepcopy(resource))
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_unknown_service_name_is_refused_given_the_services() -> None:
    resource = resource_with([{"name": "first", "serviceName": "classifier"}])
    with pytest.raises(GraphSpecError) as info:
        parse_graph(resource, services={"scorer": URL, "ranker": URL})
    assert str(info.value) == (
        "node 'root' steps[0] ('first'): no URL for service 'classifier' "
        "(services known: ranker, scorer)"
    )


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "graph.yaml", "spec: [nodes\n")
    with pytest.raises(GraphSpecError, match=r"graph '.*graph.yaml' is not YAML or JSON: "):
        load_graph(path)
    with pytest.raises(GraphSpecError, match="cannot read graph"):
        load_graph(tmp_path / "missing.yaml")


def test_graph_needs_a_hop_for_every_service() -> None:
    spec = parse_graph(resource_with([{"serviceName": "a"}, {"name": "b", "serviceName": "b"}]))
    with pytest.raises(GraphSpecError) as info:
        Graph(spec, {"a": MockHop()})
    assert str(info.value) == "node 'root' steps[1] ('b'): no hop for service 'b'"
