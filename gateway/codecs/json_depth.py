"""How deeply JSON from a client may nest: no deeper than the gateway can write back.

orjson reads 1024 levels but writes only 254, so JSON nested in between would be accepted and
then fail as a 500 when the answer (or the hop's request) is encoded. It is refused on arrival
instead. No real tensor, parameter or v1 instance nests anywhere near `MAX_DEPTH`; the margin
below orjson's limit is for the levels the gateway wraps around what it writes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway import lazy_numpy
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

Buffer = bytes | bytearray | memoryview

MAX_DEPTH = 128
_BRACKET, _BRACE, _QUOTE = ord("["), ord("{"), ord('"')


def structure(document: Buffer, keep: bytes = b"[]{}") -> np.ndarray[Any, Any]:
    """The characters of `keep` that are JSON structure (outside strings), in order, as
    uint8: C passes over the text, no Python loop per character or per string."""
    data = document if isinstance(document, bytes | bytearray) else bytes(document)
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string,
    # and what lies between string pairs is the structure.
    drop = bytes(sorted(set(range(256)) - set(keep) - {_QUOTE}))
    skeleton = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, drop)
    chars = np.frombuffer(skeleton, np.uint8)
    quotes = chars == _QUOTE
    if not quotes.any():
        return chars
    inside = np.logical_xor.accumulate(quotes)  # from an opening quote to its closing one
    kept: np.ndarray[Any, Any] = chars[~(inside | quotes)]
    return kept


def check(document: Buffer, what: str = "body") -> None:
    """Refuse valid JSON `document` if it nests deeper than `MAX_DEPTH` arrays and objects."""
    data = document if isinstance(document, bytes | bytearray) else bytes(document)
    if _openings(data) <= MAX_DEPTH:  # the usual case: a count, no structure
        return
    chars = structure(data)
    steps = np.where((chars == _BRACKET) | (chars == _BRACE), 1, -1)
    depth = int(np.cumsum(steps).max()) if steps.size else 0
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{what} nests {depth} levels deep; the limit is {MAX_DEPTH}")


# Past this size numpy counts the brackets faster than `bytes.count` (which goes byte by byte,
# twice); below it, numpy's fixed cost is the larger.
_VECTOR_COUNT = 4096


def scans_with_numpy(size: int) -> bool:
    """Whether checking `size` bytes of JSON uses numpy."""
    return size >= _VECTOR_COUNT


def _openings(data: bytes | bytearray) -> int:
    """How many ``[`` and ``{`` `data` holds, strings included."""
    if not scans_with_numpy(len(data)):
        return data.count(b"[") + data.count(b"{")
    chars = np.frombuffer(data, np.uint8)
    return int(np.count_nonzero((chars == _BRACKET) | (chars == _BRACE)))
