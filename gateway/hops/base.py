"""The one interface every hop implements, transports and wrappers alike.

A hop answers in the form it was asked: a v1 dict gets a dict, an `InferRequest` gets an
`InferResponse`, and a `gateway.passthrough.Passthrough` (a body forwarded without decoding)
gets a `PassthroughResponse`. So `postprocess` always sees what `preprocess` produced, whatever
protocol the upstream speaks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

Headers = dict[str, str]


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

    async def attempt(self, verb: str, payload: Any, headers: Headers, number: int) -> Any:
        """Attempt `number` (from 1) of an ``infer`` or ``explain`` (`verb`) that a retrying
        wrapper may repeat. By default the call itself; a hop that tells attempts apart (the
        tracing wrapper numbers its spans) overrides it."""
        if verb == "explain":
            return await self.explain(payload, headers)
        return await self.infer(payload, headers)

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
