"""The four routers with `MockHop` steps: KServe's documented behaviours (its router tests and
e2e scenarios, rewritten here), Hard and Soft failures, early stop, Splitter shares, nested
nodes, upstream statuses passed through."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest

from gateway.errors import (
    UpstreamStatusError,
    grpc_code,
    http_status,
)
from gateway.graph import Graph, NoRouteMatched, error_body
from gateway.hops.base import Headers
from gateway.hops.mock import MockHop
from tests.graph.support import (
    NOT_FOUND_BODY,
    SUCCESS,
    answer,
    error_404,
    infer,
    spec,
    success,
)

# Sequence


async def test_model_chainer() -> None:
    """KServe's TestSimpleModelChainer: the second step gets the first one's answer."""
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps:
            - {name: model1, serviceName: model1}
            - {name: model2, serviceName: model2, data: $response}
        """),
        {
            "model1": answer({"predictions": "1"}),
            "model2": (second := answer({"predictions": "2"})),
        },
    )
    assert await infer(graph, {"instances": ["test", "test2"]}) == {"predictions": "2"}
    assert second.calls[0].payload == {"predictions": "1"}
    assert second.calls[0].headers == {"x-request-id": "r"}


async def test_sequence_sends_the_node_input_by_default() -> None:
    first, second = answer({"predictions": [1]}), answer({"predictions": [2]})
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: a}, {serviceName: b, data: $request}, {serviceName: a}]
        """),
        {"a": first, "b": second},
    )
    assert await infer(graph, {"instances": [0]}) == {"predictions": [1]}
    assert [call.payload for call in first.calls + second.calls] == [{"instances": [0]}] * 3


CONDITIONAL = """
nodes:
  root:
    routerType: Sequence
    steps:
    - {name: step1, nodeName: animal-categorize}
    - {name: step2, nodeName: breed-categorize, condition: 'predictions.#(label=="dog")'}
  animal-categorize:
    routerType: Switch
    steps:
    - {name: model1, serviceName: cat, condition: 'instances.#(modelId=="1")'}
    - {name: model2, serviceName: dog, condition: 'instances.#(modelId=="2")'}
  breed-categorize:
    routerType: Ensemble
    steps:
    - {name: model3, serviceName: beagle}
    - {name: model4, serviceName: poodle}
"""


def conditional_graph() -> tuple[Graph, dict[str, MockHop]]:
    def label(name: str, scores: list[float]) -> MockHop:
        return answer({"predictions": [{"label": name, "score": scores}]})

    hops = {
        "cat": label("cat", [0.1, 0.9]),
        "dog": label("dog", [0.8, 0.2]),
        "beagle": label("beagle", [0.1, 0.9]),
        "poodle": label("poodle", [0.8, 0.2]),
    }
    return Graph(spec(CONDITIONAL), hops), hops


async def test_condition_on_the_previous_answer_and_nested_nodes() -> None:
    """KServe's TestInferenceGraphWithCondition: a Switch, then an Ensemble when the Switch's
    answer says "dog"; the Ensemble gets the Sequence's input (no $response)."""
    graph, hops = conditional_graph()
    result = await infer(graph, {"instances": [{"modelId": "2"}]})
    assert result == {
        "model3": {"predictions": [{"label": "beagle", "score": [0.1, 0.9]}]},
        "model4": {"predictions": [{"label": "poodle", "score": [0.8, 0.2]}]},
    }
    assert hops["beagle"].calls[0].payload == {"instances": [{"modelId": "2"}]}
    assert not hops["cat"].calls


async def test_early_stop_answers_the_previous_answer() -> None:
    """A cat is no dog: the Sequence stops after the Switch and answers its answer (200)."""
    graph, hops = conditional_graph()
    result = await infer(graph, {"instances": [{"modelId": "1"}]})
    assert result == {"predictions": [{"label": "cat", "score": [0.1, 0.9]}]}
    assert not hops["beagle"].calls
    assert not hops["poodle"].calls


SEQUENCE_OF_TWO = """
nodes:
  root:
    routerType: Sequence
    steps:
    - {{serviceName: {first}, dependency: {first_dependency}}}
    - {{serviceName: {second}, dependency: Soft}}
"""


@pytest.mark.parametrize(
    ("first", "second", "dependency", "status", "second_runs"),
    [
        # KServe scenario 1: success (Soft) -> error (Soft): the error's status and body.
        ("s", "e", "Soft", 404, True),
        # Scenario 2: error (Soft) -> success: a Soft failure does not stop a Sequence.
        ("e", "s", "Soft", 200, True),
        # Scenario 3: error (Hard) -> success: the error, and the next step never runs.
        ("e", "s", "Hard", 404, False),
    ],
)
async def test_hard_and_soft_failures_in_a_sequence(
    first: str, second: str, dependency: str, status: int, second_runs: bool
) -> None:
    hops = {"s": success(), "e": error_404()}
    text = SEQUENCE_OF_TWO.format(first=first, second=second, first_dependency=dependency)
    try:
        answer: Any = await infer(Graph(spec(text), hops), {"instances": [1]})
        answered = 200
    except UpstreamStatusError as exc:
        answer, answered = str(exc), http_status(exc)
    assert answered == status
    assert answer == (SUCCESS if status == 200 else NOT_FOUND_BODY)
    assert bool(hops[second].calls) is second_runs


async def test_soft_failure_cannot_be_the_next_request() -> None:
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: e}, {serviceName: s, data: $response}]
        """),
        {"s": (ok := success()), "e": error_404()},
    )
    with pytest.raises(UpstreamStatusError):
        await infer(graph, {"instances": [1]})
    assert not ok.calls


async def test_condition_after_a_soft_failure_sees_its_body() -> None:
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps:
            - {serviceName: e}
            - {serviceName: s, condition: '[@this].#(detail%"Intentional*")'}
        """),
        {"s": success(), "e": error_404()},
    )
    assert await infer(graph, {"instances": [1]}) == SUCCESS


async def test_upstream_status_passes_through_a_hard_step() -> None:
    """A 503 from a Hard step is the graph's 503 (KServe's router: 500 for everything)."""

    def busy(payload: Any, headers: Headers) -> Any:
        raise UpstreamStatusError("predictor busy", status=503, retry_after=2.0)

    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Sequence
            steps: [{serviceName: a, dependency: Hard}, {serviceName: b}]
        """),
        {"a": MockHop(busy), "b": success()},
    )
    with pytest.raises(UpstreamStatusError) as info:
        await infer(graph, {"instances": [1]})
    assert (http_status(info.value), grpc_code(info.value)) == (503, grpc.StatusCode.UNAVAILABLE)
    assert info.value.retry_after == 2.0


# Switch

SWITCH = """
nodes:
  root:
    routerType: Switch
    steps:
    - {name: rootStep1, serviceName: error, condition: "[@this].#(decision_picker==ERROR)",
       dependency: Hard}
    - {name: rootStep2, serviceName: success, condition: "[@this].#(decision_picker==SUCCESS)"}
"""


@pytest.fixture
def switch() -> Graph:
    return Graph(spec(SWITCH), {"error": error_404(), "success": success()})


def picker(decision: str) -> dict[str, Any]:
    return {"decision_picker": decision, "key1": {"name": "abc"}}


async def test_switch_takes_the_step_whose_condition_holds(switch: Graph) -> None:
    """KServe scenario 4, cases 1 and 2."""
    with pytest.raises(UpstreamStatusError) as info:
        await infer(switch, picker("ERROR"))
    assert http_status(info.value) == 404
    assert await infer(switch, picker("SUCCESS")) == SUCCESS


async def test_switch_with_no_match_is_a_404(switch: Graph) -> None:
    """KServe scenario 4, case 3."""
    with pytest.raises(NoRouteMatched) as info:
        await infer(switch, picker("NO_MATCH"))
    assert (http_status(info.value), grpc_code(info.value)) == (404, grpc.StatusCode.NOT_FOUND)
    assert info.value.node == "root"
    # On "/", the body KServe's router answers (its e2e test_ig_scenario4, case 3).
    assert error_body(info.value) == {
        "error": "Failed to process request",
        "cause": "None of the routes matched with the switch condition",
    }


async def test_switch_takes_the_first_that_holds() -> None:
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Switch
            steps:
            - {serviceName: a, condition: "instances.#(>5)"}
            - {serviceName: b, condition: "instances.#(>1)"}
            - {serviceName: c, condition: "instances"}
        """),
        {"a": answer("a"), "b": answer("b"), "c": answer("c")},
    )
    assert await infer(graph, {"instances": [3]}) == "b"
    assert await infer(graph, {"instances": [9]}) == "a"
    assert await infer(graph, {"instances": [0]}) == "c"


NESTED_SWITCH = """
nodes:
  root:
    routerType: Sequence
    steps:
    - {{name: rootStep1, nodeName: node1, dependency: {dependency}}}
    - {{name: rootStep2, serviceName: success}}
  node1:
    routerType: {router}
    steps:
    - {{name: node1Step1, serviceName: error, condition: "[@this].#(decision_picker==ERROR)",
        dependency: {dependency}, weight: 100}}
"""


@pytest.mark.parametrize("router", ["Switch", "Splitter"])
async def test_nested_soft_failure_lets_the_sequence_go_on(router: str) -> None:
    """KServe scenarios 5 (Switch) and 9 (Splitter, whose conditions KServe ignores)."""
    graph = Graph(
        spec(NESTED_SWITCH.format(router=router, dependency="Soft")),
        {"error": error_404(), "success": success()},
    )
    assert await infer(graph, picker("ERROR")) == SUCCESS


@pytest.mark.parametrize("router", ["Switch", "Splitter"])
async def test_nested_hard_failure_is_the_answer(router: str) -> None:
    """KServe scenarios 6 (Switch) and 10 (Splitter)."""
    graph = Graph(
        spec(NESTED_SWITCH.format(router=router, dependency="Hard")),
        {"error": error_404(), "success": (ok := success())},
    )
    with pytest.raises(UpstreamStatusError) as info:
        await infer(graph, picker("ERROR"))
    assert http_status(info.value) == 404
    assert not ok.calls


# Splitter


async def test_splitter_shares_follow_the_weights() -> None:
    """A canary: 80/20 (and a step of weight 0, never taken) over 2000 seeded requests,
    within four standard deviations of the expected counts."""
    hops = {"stable": answer("stable"), "canary": answer("canary"), "dark": answer("dark")}
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Splitter
            steps:
            - {serviceName: stable, weight: 80}
            - {serviceName: canary, weight: 20}
            - {serviceName: dark, weight: 0}
        """),
        hops,
        rng=random.Random(11),
    )
    total = 2000
    answers = [await infer(graph, {"instances": [i]}) for i in range(total)]
    counts = {name: answers.count(name) for name in hops}
    sigma = (total * 0.2 * 0.8) ** 0.5
    assert abs(counts["canary"] - total * 0.2) < 4 * sigma
    assert counts["stable"] + counts["canary"] == total
    assert counts["dark"] == 0


# Ensemble


async def test_ensemble_answers_by_step_name_or_index() -> None:
    """KServe's TestSimpleModelEnsemble; unnamed steps are keyed by their index."""
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Ensemble
            steps:
            - {name: model1, serviceName: m1}
            - {name: model2, serviceName: m2}
            - {serviceName: m1}
        """),
        {"m1": answer({"predictions": "1"}), "m2": answer({"predictions": "2"})},
    )
    assert await infer(graph, {"instances": ["test"]}) == {
        "model1": {"predictions": "1"},
        "model2": {"predictions": "2"},
        "2": {"predictions": "1"},
    }


async def test_ensemble_soft_failure_keeps_its_body() -> None:
    """KServe scenario 7: a failed Soft step's own body, under its name."""
    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Ensemble
            steps: [{name: rootStep1, serviceName: s}, {name: rootStep2, serviceName: e}]
        """),
        {"s": success(), "e": error_404()},
    )
    assert await infer(graph, picker("SUCCESS")) == {
        "rootStep1": SUCCESS,
        "rootStep2": {"detail": "Intentional 404 code"},
    }


async def test_ensemble_hard_failure_cancels_the_siblings() -> None:
    """KServe scenario 8: the Hard step's failure is the answer; ours also stops the others."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(payload: Any, headers: Headers) -> Any:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return SUCCESS

    async def fail_once_started(payload: Any, headers: Headers) -> Any:
        await started.wait()
        raise UpstreamStatusError(NOT_FOUND_BODY, status=404)

    graph = Graph(
        spec("""
        nodes:
          root:
            routerType: Ensemble
            steps:
            - {name: rootStep1, serviceName: e, dependency: Hard}
            - {name: rootStep2, serviceName: slow}
        """),
        {"e": MockHop(fail_once_started), "slow": MockHop(slow)},
    )
    with pytest.raises(UpstreamStatusError) as info:
        await asyncio.wait_for(infer(graph, picker("SUCCESS")), 10)
    assert http_status(info.value) == 404
    assert cancelled.is_set()
