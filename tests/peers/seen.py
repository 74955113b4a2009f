"""How a peer's identity model reports the tensor it decoded, so a test can check what reached
the peer, not only what came back: a gateway that encodes wrongly on the way in and decodes with
the same mistake on the way out would give the client its own tensor back.

Imported by the peers' models in their own environments: standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

SUFFIX = ".seen"
# An input of this name makes the peers' identity models raise (an unexpected error).
RAISE = "raise"


def seen(shape: Sequence[int], values: Iterable[object]) -> bytes:
    """The shape and the flat values (Python numbers, or bytes for BYTES) as text."""
    return f"{list(shape)} {list(values)!r}".encode()
