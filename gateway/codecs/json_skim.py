"""A large v2 JSON body read without parsing its tensor values.

The door checks the structure of a body it forwards unchanged (`gateway.codecs.validate`):
names, datatypes, shapes and element counts. Parsing 16k floats only to count them cost more
than everything else the gateway does for the request. `skim` finds each ``data`` array that
is large and flat (numbers only: what clients send for big tensors), counts its elements from
its commas, and parses the rest of the body with those arrays left empty.

Anything else is parsed whole, as before: a body with escapes (a ``"data"`` could then sit
inside a string), nested or text data, an empty ``data`` array (it could be mistaken for one
left empty here), many tensors, or a body the skim cannot account for. Values inside a skimmed
array are left to the upstream, as the values of a parsed body are: the bytes go on unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway import lazy_numpy
from gateway.codecs import json_depth
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

__all__ = ["SKIM_FROM", "Skimmed", "skim"]

# Arrays shorter than this are parsed: counting them would save less than it costs.
SKIM_FROM = 4096
# More "data" keys than this: parsed whole (each costs a few Python steps here).
_MAX_ARRAYS = 64
_DATA = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*\[')
_NOT_FLAT = (b"[", b"{", b"}", b'"')
_COMMA = ord(",")


@dataclass(frozen=True, slots=True)
class Skimmed:
    """A ``data`` array left unparsed: how many elements it holds."""

    count: int


def skim(body: bytes) -> dict[str, Any] | None:
    """The JSON of `body` with its large flat ``inputs[].data`` arrays as `Skimmed` counts, or
    None when it is to be parsed whole (also when it is not valid JSON: the whole parse says
    why)."""
    if len(body) < SKIM_FROM or b"\\" in body:
        return None
    pieces: list[bytes] = []
    counts: list[int] = []
    start = position = 0
    # `find`, not a regex search: the search goes on after an array, never through it.
    for _ in range(_MAX_ARRAYS):
        key = body.find(b'"data"', position)
        if key < 0:
            break
        match = _DATA.match(body, key)
        if match is None:
            position = key + 1
            continue
        opening = match.end()  # just past the "["
        closing = body.find(b"]", opening)
        if closing < 0:
            return None
        position = closing
        if closing - opening < SKIM_FROM:
            if not body[opening:closing].strip():
                return None  # an empty array: the skimmed ones would be mistaken for it
            continue
        if any(body.find(mark, opening, closing) >= 0 for mark in _NOT_FLAT):
            continue  # nested or text: parsed
        pieces += (body[start:opening], b"]")
        counts.append(_elements(body, opening, closing))
        start = closing + 1
    else:
        return None  # more keys than are worth a Python step each
    if not counts:
        return None
    pieces.append(body[start:])
    rest = b"".join(pieces)
    try:
        document = orjson.loads(rest)
        json_depth.check(rest)
    except (orjson.JSONDecodeError, InvalidInput):
        return None
    if not _put_counts(document, counts):
        return None
    return document  # type: ignore[no-any-return]


def _elements(body: bytes, opening: int, closing: int) -> int:
    """Elements of the flat array between `opening` and `closing`: one more than its commas
    (none when it holds only whitespace)."""
    chars = np.frombuffer(body, np.uint8, closing - opening, opening)
    commas = int(np.count_nonzero(chars == _COMMA))
    return commas + 1 if commas or body[opening:closing].strip() else 0


def _put_counts(document: object, counts: list[int]) -> bool:
    """Put the counts in the inputs whose ``data`` was emptied, in order; False when they are
    not exactly those (an array under another key, or a key given twice)."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list):
        return False
    emptied = [e for e in inputs if isinstance(e, dict) and e.get("data") == []]
    if len(emptied) != len(counts):
        return False
    for entry, count in zip(emptied, counts, strict=True):
        entry["data"] = Skimmed(count)
    return True
