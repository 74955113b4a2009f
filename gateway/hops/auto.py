"""`AutoHop`: ``--predictor_protocol auto``, the protocol learned by asking the upstream.

When the upstream is first needed (and again after a connection to it failed), the hop asks
it, within `gateway.hops.facts.LEARN_TIMEOUT`::

    GET /v2           an HTTP/2 server's frames   ->  gRPC: ServerMetadata, ModelMetadata
                      a JSON object               ->  REST v2 (its extensions: binary or not)
    GET /v1/models    a JSON object               ->  REST v1 as well
    neither answers with JSON                     ->  REST v1, KServe's default (logged)

and keeps to what it found (logged once), through the transport for it: a body passes through
in its own protocol when the upstream speaks it (a v1 client to a server that speaks v1 and v2
stays v1), and a decoded request goes in the first protocol found. An upstream that does not
answer at all is asked again at the next request; until it has answered, requests fail as
calls to a closed port do (503, retryable).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from gateway.errors import UnsupportedProtocol, UpstreamUnavailable, WrongProtocol
from gateway.hops.base import Headers, Hop, Metadata
from gateway.hops.common import unsupported_payload
from gateway.hops.facts import Learner, UpstreamFacts, server_name, takes_binary
from gateway.hops.grpc import GrpcHop
from gateway.hops.pool import Pool, Replica
from gateway.hops.replicas import Pooling, ReplicaClient, open_pool
from gateway.hops.rest import RestHop
from gateway.hops.settings import HopSettings
from gateway.infer_request import InferRequest
from gateway.passthrough import Passthrough

__all__ = ["AUTO", "AutoHop"]

logger = logging.getLogger("gateway.hops")

AUTO = "auto"


class AutoHop(Hop):
    """A hop that speaks whatever its upstream does (REST v2, REST v1 or gRPC v2). Its
    transports share one pool of replicas and what was learned (asked of one replica: the
    replicas of a pool are taken to run the same server)."""

    def __init__(self, settings: HopSettings, *, pooling: Pooling | None = None) -> None:
        self.settings = settings
        self.name = settings.role
        self.pool = open_pool(settings, pooling, self.probe)
        self.learner = Learner(
            self.discover, self.name, settings.host, keep_inputs=settings.validate_inputs
        )
        v2 = dataclasses.replace(settings, protocol="v2")
        self._v2 = RestHop(v2, learner=self.learner, pool=self.pool)
        # Made when first needed, on the v2 hop's connection pool.
        self._v1: RestHop | None = None
        self._grpc = GrpcHop(
            dataclasses.replace(settings, protocol="grpc-v2"), learner=self.learner, pool=self.pool
        )

    @property
    def protocol(self) -> str:  # type: ignore[override]
        """The protocol found ("auto" until the upstream has answered)."""
        protocols = self.learner.facts.protocols
        return protocols[0] if protocols else AUTO

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await (await self._transport(payload)).infer(payload, headers)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await (await self._transport(payload)).explain(payload, headers)

    def upstream_pool(self) -> Pool[ReplicaClient]:
        return self.pool

    async def ready(self, model_name: str | None = None) -> bool:
        protocols = (await self.learner.learned()).protocols
        return bool(protocols) and await self._for(protocols[0]).ready(model_name)

    async def probe(self, replica: Replica[ReplicaClient]) -> bool:
        """An active health check of `replica`, in the protocol found (none yet: not ready)."""
        protocols = self.learner.facts.protocols
        if not protocols:
            return False
        hop = self._for(protocols[0])
        assert isinstance(hop, RestHop | GrpcHop)
        return await hop.probe(replica)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        hop = await self._transport(None)
        return await hop.model_metadata(model_name, headers, version)

    async def server_metadata(self) -> dict[str, Any] | None:
        return await (await self._transport(None)).server_metadata()

    async def facts(self) -> UpstreamFacts:
        return await self.learner.learned()

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        self.learner.soon()
        if protocol not in self.learner.facts.protocols:
            return False
        return self._for(protocol).accepts_passthrough(protocol, binary)

    async def aclose(self) -> None:
        await self.learner.aclose()
        if self._v1 is not None:
            await self._v1.aclose()
        await self._v2.aclose()
        await self._grpc.aclose()
        await self.pool.aclose()

    async def discover(self, timeout: float) -> UpstreamFacts:
        """Ask the upstream what it speaks (see the module's docstring)."""
        try:
            server = await self._v2.document("/v2", timeout)
        except WrongProtocol as exc:
            if exc.speaks != "grpc-v2":
                raise
            return await self._grpc.discover(timeout)
        protocols: tuple[str, ...] = () if server is None else ("v2",)
        if await self._v2.document("/v1/models", timeout) is not None:
            protocols += ("v1",)
        if not protocols:
            logger.warning(
                "hop %s: %s answers neither GET /v2 nor GET /v1/models; speaking v1 to it, "
                "KServe's default (--%s_protocol chooses)",
                self.name,
                self.settings.host,
                self.name,
            )
            protocols = ("v1",)
        inputs = await self._v2.declared(timeout) if "v2" in protocols else None
        server = server or {}
        return UpstreamFacts(protocols, takes_binary(server), server_name(server), inputs)

    async def _transport(self, payload: Any) -> Hop:
        """The transport for `payload` (None: for a metadata call), once the protocol is
        known."""
        protocols = (await self.learner.learned()).protocols
        if not protocols:
            raise UpstreamUnavailable(
                f"the {self.name} at {self.settings.host} has not said what it speaks: it did "
                "not answer (asked again at the next request)",
                upstream=self.name,
            )
        if isinstance(payload, Passthrough):
            if payload.protocol not in protocols:
                raise UnsupportedProtocol(
                    payload.protocol,
                    f"a {payload.protocol} body cannot pass through the {self.name} hop "
                    f"(the {self.name} speaks {' and '.join(protocols)})",
                )
            return self._for(payload.protocol)
        if payload is not None and not isinstance(payload, InferRequest):
            raise unsupported_payload(payload)
        return self._for(protocols[0])

    def _for(self, protocol: str) -> Hop:
        if protocol == "grpc-v2":
            return self._grpc
        if protocol == "v2":
            return self._v2
        if self._v1 is None:
            settings = dataclasses.replace(self.settings, protocol="v1")
            self._v1 = RestHop(settings, self._v2.session(), learner=self.learner, pool=self.pool)
        return self._v1
