"""How deeply JSON may nest (codecs.json_depth); the property against a real parser and the
doors' refusals are in `tests/security/test_json_depth.py`."""

from __future__ import annotations

import pytest

from gateway.codecs.json_depth import MAX_DEPTH, check
from gateway.errors import InvalidInput


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + "1" + close * depth).encode()


def test_the_limit_is_allowed_one_more_is_not() -> None:
    check(nested(MAX_DEPTH))
    check(memoryview(nested(MAX_DEPTH)))
    with pytest.raises(InvalidInput, match=f"body nests {MAX_DEPTH + 1} levels deep"):
        check(nested(MAX_DEPTH + 1))
    objects = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    with pytest.raises(InvalidInput, match="CloudEvent nests"):
        check(objects, "CloudEvent")


def test_brackets_inside_strings_are_not_structure() -> None:
    text = '["' + "[" * (2 * MAX_DEPTH) + '"]'
    check(text.encode())
    escaped = '["\\"' + "{" * (2 * MAX_DEPTH) + '\\\\", 1]'
    check(escaped.encode())


def test_many_brackets_side_by_side_are_not_depth() -> None:
    check(b"[" + b",".join([b"[1]"] * (3 * MAX_DEPTH)) + b"]")


def test_a_large_body_is_counted_as_a_small_one() -> None:
    """Bodies past the size where the count switches to numpy: deep is still refused, and a
    large flat one (a tensor's data) passes."""
    padding = '"' + "x" * 8192 + '"'
    deep = ("[" * (MAX_DEPTH + 1) + padding + "]" * (MAX_DEPTH + 1)).encode()
    with pytest.raises(InvalidInput, match=f"nests {MAX_DEPTH + 1} levels deep"):
        check(deep)
    with pytest.raises(InvalidInput):
        check(bytearray(deep))
    check(("[" * MAX_DEPTH + padding + "]" * MAX_DEPTH).encode())
    flat = b'{"inputs":[{"data":[' + b",".join([b"[0.5]"] * 4000) + b"]}]}"
    check(flat)
