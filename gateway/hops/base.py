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

from gateway.hops.facts import UNKNOWN, UpstreamFacts
from gateway.hops.pool import Pool

Headers = dict[str, str]
# A model's metadata as the v2 REST protocol writes it (name, versions, platform, inputs,
# outputs, and whatever else the upstream adds).
Metadata = dict[str, Any]


class Hop(ABC):
    """One way to reach an upstream: ``infer``, ``explain``, ``ready``, ``aclose``, and what
    the upstream says about itself (``model_metadata``, ``server_metadata``, ``facts``)."""

    #: The role of the upstream ("predictor", "explainer"), for spans, metrics and timings.
    name: str = "hop"
    #: The protocol spoken to the upstream: "v1", "v2" or "grpc-v2" ("auto" until known).
    protocol: str = "v2"

    @abstractmethod
    async def infer(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def explain(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def ready(self, model_name: str | None = None) -> bool: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        """The upstream's metadata of its model (`model_name` unless the hop names the
        upstream's model itself); None when the upstream's protocol has none (v1)."""
        return None

    async def server_metadata(self) -> dict[str, Any] | None:
        """The upstream server's metadata (name, version, extensions); None when its
        protocol has none (v1)."""
        return None

    async def facts(self) -> UpstreamFacts:
        """What the upstream said about itself (learned when first needed, and again after
        it was found gone; a wait for them is bounded and within the request's deadline)."""
        return UNKNOWN

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        """Whether a body received on `protocol` can be forwarded here undecoded."""
        return False

    def upstream_pool(self) -> Pool[Any] | None:
        """The replicas behind the hop, when it has a pool: a retrying wrapper opens one
        pool call per request on it (`gateway.hops.retry`)."""
        return None

    async def attempt(self, verb: str, payload: Any, headers: Headers, number: int) -> Any:
        """Attempt `number` (from 1) of a call that a retrying wrapper may repeat: `verb`
        "infer" or "explain" of `payload`, or "model_metadata" of `payload` = (model name,
        version). By default the call itself; a hop that tells attempts apart (the tracing
        wrapper numbers its spans) overrides it."""
        if verb == "explain":
            return await self.explain(payload, headers)
        if verb == "model_metadata":
            return await self.model_metadata(payload[0], headers, payload[1])
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

    @property
    def protocol(self) -> str:  # type: ignore[override]
        # The inner hop's, read each time: an "auto" hop learns it from the upstream.
        return self.inner.protocol

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.infer(payload, headers)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.explain(payload, headers)

    async def ready(self, model_name: str | None = None) -> bool:
        return await self.inner.ready(model_name)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        return await self.inner.model_metadata(model_name, headers, version)

    async def server_metadata(self) -> dict[str, Any] | None:
        return await self.inner.server_metadata()

    async def facts(self) -> UpstreamFacts:
        return await self.inner.facts()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        return self.inner.accepts_passthrough(protocol, binary)

    def upstream_pool(self) -> Pool[Any] | None:
        return self.inner.upstream_pool()
