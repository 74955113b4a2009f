"""Which inbound headers travel on to an upstream (`gateway.header_rules`), and the wrapper
that applies it.

Passed on: ``x-request-id`` (the server's, generated when the client sent none), trace
context and baggage in every format (W3C, B3, Jaeger; with tracing on, the tracing wrapper
replaces them per attempt by the configured formats), the operator's allow-list, and
``Authorization`` only when the operator allows it. Hop-by-hop and framing headers never are:
each hop frames its own body. A value with CR or LF is refused: it could forge headers.
"""

from __future__ import annotations

import functools
from typing import Any

from gateway import request_context
from gateway.errors import InvalidInput
from gateway.header_rules import ALWAYS_FORWARDED, HOP_BY_HOP, REQUEST_ID
from gateway.hops.base import Headers, Hop, HopWrapper, Metadata
from gateway.hops.settings import HopSettings


@functools.lru_cache(maxsize=64)
def forwarded(settings: HopSettings) -> frozenset[str]:
    """The lowercase names of the inbound headers `settings` lets through."""
    allowed = ALWAYS_FORWARDED | settings.forward_headers
    if settings.forward_authorization:
        allowed |= {"authorization"}
    return allowed - HOP_BY_HOP


def outbound(headers: Headers, settings: HopSettings) -> Headers:
    """The headers to send upstream for a request that arrived with `headers`."""
    return _outbound(headers, forwarded(settings))


def _outbound(headers: Headers, allowed: frozenset[str]) -> Headers:
    out: Headers = {}
    connection: list[str] = []  # every spelling of the name: a dict may hold several
    broken: list[str] = []
    for name, value in headers.items():
        key = name.lower()
        if key == "connection":
            connection.extend(value.split(","))
        elif key in allowed:
            out[key] = value
            if "\r" in value or "\n" in value:
                broken.append(key)
    # Headers the client named in Connection are hop-by-hop too (RFC 9110, 7.6.1).
    for named in connection:
        out.pop(named.strip().lower(), None)
    for key in broken:
        if key in out:  # even if a later value of the same name replaced this one
            raise InvalidInput(f"header {key!r} contains a line break")
    context = request_context.current()
    if context is not None:
        # The request's id, which is the client's only when it can be (`envelope.request_id`).
        out[REQUEST_ID] = context.request_id
    _check_size(out)
    return out


# What forwarded headers may take, counted as HTTP/2 does (32 bytes an entry besides its
# name and value): gRPC's default metadata limit is 8 KiB, and the hop adds its own headers.
MAX_FORWARDED_BYTES = 7 << 10


def _check_size(headers: Headers) -> None:
    """Refuse headers an upstream would refuse: the client's fault, said before the call
    (rather than the upstream's answer, which a gRPC one words as RESOURCE_EXHAUSTED)."""
    size = sum(len(key) + len(value) + 32 for key, value in headers.items())
    if size > MAX_FORWARDED_BYTES:
        largest = sorted(headers, key=lambda key: len(headers[key]), reverse=True)[:3]
        raise InvalidInput(
            f"the headers to forward upstream take {size} bytes, over the limit of "
            f"{MAX_FORWARDED_BYTES} (largest: {', '.join(largest)})"
        )


class Forwarding(HopWrapper):
    """Filters the inbound headers down to what may travel upstream."""

    def __init__(self, inner: Hop, settings: HopSettings) -> None:
        super().__init__(inner)
        self.settings = settings
        # Looked up once: the settings' hash (every field of them) costs more than the rest.
        self._allowed = forwarded(settings)

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.infer(payload, _outbound(headers, self._allowed))

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.explain(payload, _outbound(headers, self._allowed))

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        return await self.inner.model_metadata(
            model_name, _outbound(headers, self._allowed), version
        )
