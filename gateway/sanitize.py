"""Text that came from an upstream, made fit for a log line or an error answer.

An upstream's error message (a REST body, gRPC details, an HTTP library's account of what it
received) is the upstream's text: it may be megabytes long, or hold line breaks that forge
log lines. Both transports pass it through `upstream_text` before it becomes part of an
error's message: one line, no control characters, at most `TEXT_LIMIT` characters.
"""

from __future__ import annotations

import re

__all__ = ["TEXT_LIMIT", "upstream_text"]

# Enough for any real error message; a stack trace an upstream sends is cut.
TEXT_LIMIT = 2048

# Control characters (C0, DEL, C1: NEL among them), Unicode's line and paragraph separators,
# and the invisible marks that reorder text as it is displayed.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def upstream_text(text: str | bytes | bytearray, limit: int = TEXT_LIMIT) -> str:
    """`text` (bytes are read as UTF-8) on one line, without control characters, cut to
    `limit` characters (a cut ends in "...")."""
    if isinstance(text, bytes | bytearray):
        # A UTF-8 character takes at most 4 bytes: this many hold the first `limit` of them.
        more = len(text) > 4 * limit
        text = bytes(text[: 4 * limit]).decode("utf-8", "replace")
    else:
        more = False
    if len(text) > limit:
        text, more = text[:limit], True
    text = _UNSAFE.sub(" ", text).strip()
    return f"{text}..." if more else text
