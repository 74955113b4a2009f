"""An upstream's HTTP answer body, read within the hop's size limit.

The limit is checked while reading: a ``Content-Length`` over it is refused before a byte of
the body is read, a chunked body as soon as it crosses it. The gateway asks for
``Accept-Encoding: identity`` and its HTTP client decodes nothing by itself; an upstream that
compresses anyway is decoded here, in bounded steps that stop at the limit (gzip, deflate),
or refused (any other coding). Past the limit, or when the body cannot be decoded, the call
fails with a 502 that says so: the client gets no half answer, and the gateway's memory is
never more than the limit per call.
"""

from __future__ import annotations

import zlib

import aiohttp

from gateway import offload
from gateway.errors import UpstreamProtocolError

__all__ = ["read_answer", "too_large"]

# zlib window bits: a gzip stream, a zlib stream (HTTP's "deflate"), a raw deflate stream
# (what some servers send as "deflate").
_GZIP, _ZLIB, _RAW = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
_CODINGS = {"gzip": (_GZIP,), "x-gzip": (_GZIP,), "deflate": (_ZLIB, _RAW)}


def too_large(role: str, limit: int, size: int | None = None) -> UpstreamProtocolError:
    """The error for an answer from `role` over `limit` bytes (`size`, when known)."""
    has = f" ({size} bytes)" if size is not None else ""
    return UpstreamProtocolError(
        f"the {role}'s answer{has} is larger than the gateway's limit of {limit} bytes for "
        "an upstream's answer",
        upstream=role,
    )


async def read_answer(response: aiohttp.ClientResponse, limit: int, role: str) -> bytes:
    """The body of `response`, decoded, at most `limit` bytes."""
    length = response.content_length
    if length is not None and length > limit:
        raise too_large(role, limit, length)
    if length is not None:
        body = await response.read()  # aiohttp refuses a body longer than its Content-Length
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_large(role, limit)
            chunks.append(chunk)
        body = b"".join(chunks)
    coding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _CODINGS.get(coding)
    if wbits is None:
        raise UpstreamProtocolError(
            f"the {role} answered in Content-Encoding {coding[:32]!r}, which the gateway does "
            "not decode (it asks for identity)",
            upstream=role,
        )
    # zlib lets the interpreter go while it inflates: a large body is decoded in a thread.
    heft = offload.weight(4 * len(body))
    return await offload.run(lambda: _inflate(body, wbits, limit, role), heft)


def _inflate(body: bytes, choices: tuple[int, ...], limit: int, role: str) -> bytes:
    reason = ""
    for wbits in choices:
        inflater = zlib.decompressobj(wbits)
        try:
            # One byte more than the limit: enough to tell that the whole is over it.
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            reason = str(exc)
            continue
        if len(out) > limit:
            raise too_large(role, limit)
        if not inflater.eof:
            raise UpstreamProtocolError(
                f"the {role}'s compressed answer is cut short", upstream=role
            )
        return out
    raise UpstreamProtocolError(
        f"the {role}'s compressed answer cannot be decoded: {reason}", upstream=role
    )
