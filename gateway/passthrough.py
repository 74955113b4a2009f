"""Bodies that travel undecoded: a request forwarded as it arrived, and the upstream's answer.

When a model only forwards and the upstream speaks the client's protocol, the door hands the
hop the request's bytes (`Passthrough`) and the client gets the upstream's (`PassthroughResponse`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Passthrough:
    """A request body forwarded exactly as it arrived, on the protocol it arrived on.

    REST: the JSON (or binary-extension) body with its ``Inference-Header-Content-Length``;
    gRPC: the serialized ``ModelInferRequest``.
    """

    protocol: str
    model_name: str
    body: bytes
    json_length: int | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class PassthroughResponse:
    """The upstream's answer to a `Passthrough`, as bytes for the client."""

    body: bytes
    json_length: int | None = None
    content_type: str = "application/json"
