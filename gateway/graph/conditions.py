"""Step conditions in GJSON syntax, evaluated as KServe's router does: a condition holds when
``gjson.Get(document, condition).Exists()`` on the JSON it is tested on.

Evaluation is `pygjson`'s (bindings to gjson.rs, tidwall's own port of Go's gjson), which
accepts the lenient forms KServe users write (``[@this].#(decision_picker==ERROR)``, unquoted
strings, ``#(...)`` queries, ``%`` patterns); ``tests/graph/test_conditions.py`` holds the table
checked against Go's gjson. GJSON refuses no path, so a condition whose brackets or quotes do
not close (one that can never match) is refused here, when the graph is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pygjson

__all__ = ["Condition"]

_CLOSE = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Condition:
    """A compiled GJSON path; `matches` says whether it finds anything in a JSON document."""

    text: str
    _path: pygjson.Path = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Condition:
        """The condition `text`; ValueError saying what is wrong with it."""
        if not text.strip():
            raise ValueError("the condition is empty")
        problem = _unbalanced(text)
        if problem:
            raise ValueError(f"condition {text!r} cannot be parsed: {problem}")
        return cls(text, pygjson.compile(text))

    def matches(self, document: bytes) -> bool:
        """Whether the path exists in `document` (JSON, UTF-8)."""
        return bool(pygjson.get_bytes(document, self._path).exists())


def _unbalanced(text: str) -> str | None:
    """What keeps `text`'s brackets, braces, parentheses and quotes from closing, if anything.

    Only delimiters are checked, as GJSON reads them: a backslash escapes the next character,
    and nothing inside a quoted string counts."""
    stack: list[tuple[str, int]] = []
    quote: int | None = None
    escaped = False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote is not None:
            if char == '"':
                quote = None
        elif char == '"':
            quote = position
        elif char in _CLOSE:
            stack.append((char, position))
        elif char in _CLOSE.values():
            if not stack or _CLOSE[stack[-1][0]] != char:
                return f"{char!r} at {position} closes nothing"
            stack.pop()
    if quote is not None:
        return f"the string opened at {quote} is not closed"
    if stack:
        char, position = stack[-1]
        return f"{char!r} at {position} is not closed"
    return None
