"""How deeply JSON from a client may nest: no deeper than the gateway can write back.

orjson reads 1024 levels but writes only 254, so JSON nested in between would be accepted and
then fail as a 500 when the answer (or the hop's request) is encoded. It is refused on arrival
instead. No real tensor, parameter or v1 instance nests anywhere near `MAX_DEPTH`; the margin
below orjson's limit is for the levels the gateway wraps around what it writes back.
"""

from __future__ import annotations

import numpy as np

from gateway.errors import InvalidInput

Buffer = bytes | bytearray | memoryview

MAX_DEPTH = 128
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_OPEN = np.frombuffer(b"[{", np.uint8)


def check(document: Buffer, what: str = "body") -> None:
    """Refuse valid JSON `document` if it nests deeper than `MAX_DEPTH` arrays and objects."""
    data = document if isinstance(document, bytes | bytearray) else bytes(document)
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:  # the usual case: one C pass or two
        return
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string,
    # and the brackets between string pairs are the structure.
    skeleton = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    structure = np.frombuffer(b"".join(skeleton.split(b'"')[::2]), np.uint8)
    steps = np.where(np.isin(structure, _OPEN), 1, -1)
    depth = int(np.cumsum(steps).max()) if steps.size else 0
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{what} nests {depth} levels deep; the limit is {MAX_DEPTH}")
