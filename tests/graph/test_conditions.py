"""Step conditions: the GJSON table checked against Go's gjson, and what is refused at load.

Expected results are Go gjson's (tidwall/gjson 1.14.4, Debian's golang-github-tidwall-gjson-dev,
run on each row: ``gjson.Get(doc, path)``, ``Exists()`` and ``Raw``), for the paths of gjson's
SYNTAX.md and the conditions of KServe's docs and tests (test/e2e/graph, cmd/router tests,
the InferenceGraph overview and image-pipeline pages).

The two maintained Python candidates were run on the same rows (pygjson 0.0.10, gjson-py
1.2.0). pygjson (bindings to gjson.rs) agreed on every row. gjson-py disagreed on 25, among
them every lenient form KServe users write:

- unquoted strings are refused ("Invalid value `ERROR` for the query key"):
  ``[@this].#(decision_picker==ERROR)``, ``friends.#(last==Murphy).first``,
  ``[@this].#(key1.name==abc)``, ``[@this].#(key1.name%a*)``, ``outputs.#(name==score).data.0``;
- ``[@this].#(...)`` (the root wrapped in an array, then queried) matches nothing:
  ``[@this].#(predictions.0=="dog")``, ``[@this].#(instances.0.data>0.9)``, ...;
- ``~`` truthiness differs: ``vals.#(b==~true)#.a`` gives [1,2,4,6,7,8], Go [1,2,6,7,8];
- a path that finds nothing raises instead of "does not exist".
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pygjson
import pytest

from gateway.graph import Condition, parse_graph
from gateway.graph.spec import GraphSpecError

MISSING = object()

SYNTAX = {
    "name": {"first": "Tom", "last": "Anderson"},
    "age": 37,
    "children": ["Sara", "Alex", "Jack"],
    "fav.movie": "Deer Hunter",
    "friends": [
        {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
        {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
        {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]},
    ],
}
VALS = {
    "vals": [
        {"a": 1, "b": True}, {"a": 2, "b": True}, {"a": 3, "b": False}, {"a": 4, "b": "0"},
        {"a": 5, "b": 0}, {"a": 6, "b": "1"}, {"a": 7, "b": 1}, {"a": 8, "b": "true"},
        {"a": 9, "b": False}, {"a": 10, "b": None}, {"a": 11},
    ]
}  # fmt: skip
# KServe's e2e inputs (switch_call_*_input.json) and router test answers.
ERR = {"decision_picker": "ERROR", "key1": {"name": "abc"}}
OK = {"decision_picker": "SUCCESS", "key1": {"name": "abc"}}
NOM = {"decision_picker": "NO_MATCH", "key1": {"name": "abc"}}
INST = {"instances": [{"modelId": "2"}]}
DOG = {"predictions": [{"label": "dog", "score": [0.8, 0.2]}]}
# KServe's docs: the image pipeline's classifier answer, the overview's conditions.
CAT1 = {"predictions": ["dog"]}
NEWS = {"predictions": [{"class": "news"}]}
HIGH = {"instances": [{"data": 0.95}]}
MID = {"instances": [{"data": 0.7}]}
# A v2 answer, as a condition sees it (its REST JSON).
V2 = {
    "model_name": "m",
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["dog"]},
        {"name": "score", "datatype": "FP32", "shape": [1], "data": [0.9]},
    ],
}

TABLE: list[tuple[dict[str, Any], str, Any]] = [
    # gjson's SYNTAX.md
    (SYNTAX, "name.last", "Anderson"),
    (SYNTAX, "age", 37),
    (SYNTAX, "children.1", "Alex"),
    (SYNTAX, "friends.1.first", "Roger"),
    (SYNTAX, "child*.2", "Jack"),
    (SYNTAX, "c?ildren.0", "Sara"),
    (SYNTAX, r"fav\.movie", "Deer Hunter"),
    (SYNTAX, "friends.#", 3),
    (SYNTAX, "friends.#.age", [44, 68, 47]),
    (SYNTAX, 'friends.#(last=="Murphy").first', "Dale"),
    (SYNTAX, 'friends.#(last=="Murphy")#.first', ["Dale", "Jane"]),
    (SYNTAX, "friends.#(age>45)#.last", ["Craig", "Murphy"]),
    (SYNTAX, 'friends.#(first%"D*").last', "Murphy"),
    (SYNTAX, 'friends.#(first!%"D*").last', "Craig"),
    (SYNTAX, 'children.#(!%"*a*")', "Alex"),
    (SYNTAX, 'children.#(%"*a*")#', ["Sara", "Jack"]),
    (SYNTAX, 'friends.#(nets.#(=="fb"))#.first', ["Dale", "Roger"]),
    (SYNTAX, 'friends.#(last="Murphy")#|#', 2),
    (SYNTAX, 'friends.#(last="Murphy")#|0.first', "Dale"),
    (SYNTAX, "children.@reverse.0", "Jack"),
    (SYNTAX, "{name.first,age}", {"first": "Tom", "age": 37}),
    (SYNTAX, 'friends.#(last!="Murphy").first', "Roger"),
    (SYNTAX, "friends.#(age<45).first", "Dale"),
    (SYNTAX, "friends.#(age<=44).first", "Dale"),
    (SYNTAX, "friends.#(age>=68).first", "Roger"),
    (SYNTAX, 'friends.#(last=="Nobody")', MISSING),
    # A query for all matches exists even when nothing matches: as a condition, always true.
    (SYNTAX, "friends.#(age>100)#", []),
    (SYNTAX, "nothing.here", MISSING),
    (SYNTAX, "friends.#(last==Murphy).first", "Dale"),
    (SYNTAX, "friends.#(age==44).first", "Dale"),
    (SYNTAX, "friends.#(age!=44)#.first", ["Roger", "Jane"]),
    (SYNTAX, "@this.age", 37),
    (SYNTAX, "[@this].#(age==37).name.first", "Tom"),
    (SYNTAX, "friends.#(nets)#.first", ["Dale", "Roger", "Jane"]),
    (VALS, "vals.#(b==~true)#.a", [1, 2, 6, 7, 8]),
    (VALS, "vals.#(b==~false)#.a", [3, 4, 5, 9, 10, 11]),
    # KServe's e2e graphs (ig_test_switch_scenario_4/5/6/9/10.yaml): unquoted strings
    (ERR, "[@this].#(decision_picker==ERROR)", ERR),
    (OK, "[@this].#(decision_picker==ERROR)", MISSING),
    (OK, "[@this].#(decision_picker==SUCCESS)", OK),
    (NOM, "[@this].#(decision_picker==ERROR)", MISSING),
    (NOM, "[@this].#(decision_picker==SUCCESS)", MISSING),
    (ERR, '[@this].#(decision_picker=="ERROR")', ERR),
    (ERR, "decision_picker", "ERROR"),
    (ERR, "[@this].#(key1.name==abc)", ERR),
    (ERR, "[@this].#(key1.name%a*)", ERR),
    # KServe's router tests (cmd/router/main_test.go)
    (INST, 'instances.#(modelId=="1")', MISSING),
    (INST, 'instances.#(modelId=="2")', {"modelId": "2"}),
    (DOG, 'predictions.#(label=="dog")', DOG["predictions"][0]),
    (DOG, 'predictions.#(label=="cat")', MISSING),
    # KServe's docs
    (CAT1, '[@this].#(predictions.0=="dog")', CAT1),
    (CAT1, '[@this].#(predictions.0=="cat")', MISSING),
    (NEWS, '[@this].#(predictions.0.class=="news")', NEWS),
    (NEWS, '[@this].#(predictions.0.class=="sports")', MISSING),
    (HIGH, "[@this].#(instances.0.data>0.9)", HIGH),
    (HIGH, "[@this].#(instances.0.data<=0.5)", MISSING),
    # The overview's "&&" is no GJSON operator: Go reads the value "0.5 && ..." as the number
    # 0, so the condition holds for any data above 0 (0.95 too). Same here, as in KServe.
    (MID, "[@this].#(instances.0.data>0.5 && instances.0.data<=0.9)", MID),
    (HIGH, "[@this].#(instances.0.data>0.5 && instances.0.data<=0.9)", HIGH),
    (MID, "[@this].#(instances.0.data>0.9)", MISSING),
    # Conditions on a v2 answer
    (V2, 'outputs.#(name=="label").data.0', "dog"),
    (V2, '[@this].#(outputs.0.data.0=="dog")', V2),
    (V2, "outputs.#(name==score).data.0", 0.9),
    (V2, "[@this].#(outputs.1.data.0>0.5)", V2),
]


@pytest.mark.parametrize(("doc", "path", "expected"), TABLE, ids=[row[1] for row in TABLE])
def test_condition_matches_go_gjson(doc: dict[str, Any], path: str, expected: Any) -> None:
    assert Condition.parse(path).matches(orjson.dumps(doc)) is (expected is not MISSING)


@pytest.mark.parametrize(("doc", "path", "expected"), TABLE, ids=[row[1] for row in TABLE])
def test_value_matches_go_gjson(doc: dict[str, Any], path: str, expected: Any) -> None:
    """What the path finds, not only whether: the library reads GJSON as Go does."""
    result = pygjson.get(orjson.dumps(doc).decode(), path)
    if expected is MISSING:
        assert not result.exists()
    else:
        assert _plain(result) == expected


def _plain(result: Any) -> Any:
    value = result.value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# Go's gjson finds nothing for each of these, whatever the document: refused at load instead.
UNPARSABLE = [
    ("#(a==1", "'(' at 1 is not closed"),
    ("a.#(b==1", "'(' at 3 is not closed"),
    ("[@this", "'[' at 0 is not closed"),
    ("[@this].#(c==x", "'(' at 9 is not closed"),
    ('a.#(b=="1)', "the string opened at 7 is not closed"),
    ("{a", "'{' at 0 is not closed"),
    ("a)", "')' at 1 closes nothing"),
    ("a.#(b==1]", "']' at 8 closes nothing"),
    ("   ", "the condition is empty"),
]


@pytest.mark.parametrize(("text", "problem"), UNPARSABLE)
def test_unparsable_condition_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Condition.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        r'#(name=="a)b")',  # a bracket inside a string
        r"fav\.movie",  # an escape
        r"a\(b",  # an escaped bracket
        '{name.first,"the_murphys":friends.#(last="Murphy")#.first}',
        '@pretty:{"sortKeys":true}',
    ],
)
def test_delimiters_inside_strings_and_escapes_are_not_counted(text: str) -> None:
    assert Condition.parse(text).text == text


def test_unparsable_condition_refuses_the_graph_naming_node_and_step() -> None:
    resource = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "g"},
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Switch",
                    "steps": [{"name": "pick", "serviceUrl": "http://h/v1/models/m:predict",
                               "condition": "[@this].#(decision_picker==ERROR"}],
                }
            }
        },
    }  # fmt: skip
    with pytest.raises(GraphSpecError) as info:
        parse_graph(resource)
    assert str(info.value) == (
        "node 'root' steps[0] ('pick'): condition '[@this].#(decision_picker==ERROR' cannot be "
        "parsed: '(' at 9 is not closed"
    )
