"""The one interface every hop implements, transports and wrappers alike.

A hop answers in the form it was asked: a v1 dict gets a dict, an `InferRequest` gets an
`InferResponse`, and a `Passthrough` (a body forwarded without decoding) gets a
`PassthroughResponse`. So `postprocess` always sees what `preprocess` produced, whatever
protocol the upstream speaks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any

Headers = dict[str, str]


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


class Hop(ABC):
    """One way to reach an upstream: ``infer``, ``explain``, ``ready``, ``aclose``."""

    #: The role of the upstream ("predictor", "explainer"), for spans, metrics and timings.
    name: str = "hop"
    #: The protocol spoken to the upstream: "v1", "v2" or "grpc-v2".
    protocol: str = "v2"

    @abstractmethod
    async def infer(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def explain(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def ready(self, model_name: str | None = None) -> bool: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        """Whether a body received on `protocol` can be forwarded here undecoded."""
        return False

    async def __aenter__(self) -> Hop:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class HopWrapper(Hop):
    """A hop around another hop: delegates everything it does not change."""

    def __init__(self, inner: Hop) -> None:
        self.inner = inner
        self.name = inner.name
        self.protocol = inner.protocol

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.infer(payload, headers)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.explain(payload, headers)

    async def ready(self, model_name: str | None = None) -> bool:
        return await self.inner.ready(model_name)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        return self.inner.accepts_passthrough(protocol, binary)
