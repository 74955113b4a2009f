"""JSON nested deeper than the gateway can write back is refused when it arrives (400), not
when the answer or the hop's request fails to encode (500)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codecs import json_depth
from gateway.errors import InvalidInput
from tests.security.harness import Gateway, check_answer, fuzzing

CE = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
CE_HEADERS = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}


def nested(depth: int) -> str:
    """JSON text of a value `depth` arrays deep (written by hand: json.dumps would recurse)."""
    return "[" * depth + "1" + "]" * depth


def bodies(depth: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) for each JSON decoder, the deepest value `depth` levels down."""
    instances = f'{{"instances": {nested(depth - 1)}}}'.encode()
    v2 = f'{{"inputs": [], "parameters": {{"p": {nested(depth - 2)}}}}}'.encode()
    binary = (
        '{"inputs": [{"name": "b", "shape": [1], "datatype": "UINT8", '
        f'"parameters": {{"binary_data_size": 1, "p": {nested(depth - 4)}}}}}]}}'
    ).encode()
    event = json.dumps(CE)[:-1]
    structured = f'{event}, "data": {{"instances": {nested(depth - 2)}}}}}'.encode()
    return [
        ("/v1/models/echo:predict", instances, {"Content-Type": "application/json"}),
        ("/v1/models/echo:explain", instances, {}),
        ("/v2/models/echo/infer", v2, {}),
        ("/v2/models/echo/infer", binary + b"\x01",
         {"Inference-Header-Content-Length": str(len(binary))}),
        ("/v1/models/echo:predict", structured,
         {"Content-Type": "application/cloudevents+json"}),
        ("/v1/models/echo:predict", instances, {**CE_HEADERS, "Content-Type": "application/json"}),
    ]  # fmt: skip


@pytest.mark.parametrize("depth", [129, 254, 300, 1000, 1025, 20000])
def test_json_nested_too_deep_is_refused_on_arrival(gateway: Gateway, depth: int) -> None:
    for path, body, headers in bodies(depth):
        answer = gateway.http("POST", path, body, headers)
        assert answer.status == 400, (path, headers, answer)
        check_answer(answer)
    gateway.assert_rest_serving()


def test_json_at_the_limit_is_served(gateway: Gateway) -> None:
    for path, body, headers in bodies(json_depth.MAX_DEPTH):
        answer = gateway.http("POST", path, body, headers)
        assert answer.status == 200, (path, headers, answer)


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


# Keys and strings full of what the scan must see through: brackets, quotes, backslashes.
tricky_text = st.text(st.sampled_from(list('ab[]{}"\\\n\u00e9')), max_size=6)


@st.composite
def deep_documents(draw: st.DrawFn) -> Any:
    value = draw(
        st.recursive(
            st.none() | tricky_text | st.integers(),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3)
            ),
            max_leaves=6,
        )
    )
    limit = json_depth.MAX_DEPTH
    levels = draw(st.integers(0, 2 * limit) | st.integers(limit - 2, limit + 2))
    # Wrapped in `levels` more arrays and objects, a few kinds in turn (cheap to draw).
    pattern = draw(st.lists(st.tuples(st.integers(0, 2), tricky_text), min_size=1, max_size=4))
    for level in range(levels):
        kind, text = pattern[level % len(pattern)]
        value = [value] if kind == 0 else [text, value] if kind == 1 else {text: value}
    return value


@fuzzing(3)
@given(deep_documents(), st.booleans())
def test_the_depth_scan_agrees_with_a_parser(document: Any, ascii_only: bool) -> None:
    depth = reference_depth(document)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))
    try:
        text = json.dumps(document, ensure_ascii=ascii_only).encode()
    finally:
        sys.setrecursionlimit(limit)
    if depth <= json_depth.MAX_DEPTH:
        json_depth.check(text)
    else:
        with pytest.raises(InvalidInput, match=f"nests {depth} levels deep"):
            json_depth.check(text)
