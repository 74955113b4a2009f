"""`RestHop`: KServe v1 and Open Inference Protocol v2 over HTTP, on one pooled session.

It takes an `InferRequest`, sent in the form the upstream speaks (v1 and v2 meet through
`gateway.codecs.v1`) and answered with an `InferResponse`, or a `Passthrough` body, which
travels untouched (dicts are `gateway.hops.shaping`'s). aiohttp's errors become ours in
`gateway.hops.rest_wire.upstream_error`, one table, which says what Retrying
(`gateway.hops.retry`) may repeat: only what cannot have reached the upstream's model.

With ``rest_format`` "auto" (the default), tensors go to a v2 upstream in the binary extension
only when its metadata (``GET /v2``) lists ``binary_tensor_data``: learned by the hop's
`Learner` when first needed and again after a connection to it failed; until the upstream
has said so, in JSON. A tensor JSON cannot carry (NaN, infinity, BYTES that are not UTF-8)
goes binary all the same: the upstream, not the gateway, decides whether it takes it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any, TypeVar

import aiohttp
import orjson

from gateway import offload
from gateway.codecs import rest as rest_codec
from gateway.codecs.validate import TensorSpec
from gateway.errors import (
    UnsupportedProtocol,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
    WrongProtocol,
)
from gateway.hops.answers import read_answer
from gateway.hops.base import Headers, Hop, Metadata
from gateway.hops.common import (
    READY_TIMEOUT,
    call_timeout,
    decoded,
    merge_server_timing,
    not_found,
    unsupported_payload,
)
from gateway.hops.facts import (
    Learner,
    UpstreamFacts,
    declared_inputs,
    server_name,
    takes_binary,
)
from gateway.hops.pool import Pool, Replica, leased
from gateway.hops.replicas import Pooling, ReplicaClient, name_replica, pool_ready, upstream_of
from gateway.hops.rest_wire import (
    Answer,
    CallTimeouts,
    Urls,
    body_payload,
    content_type,
    json_length,
    negotiated_body,
    new_session,
    says_ready,
    segment,
    successful,
    upstream_error,
    v1_body,
    v1_response,
)
from gateway.hops.settings import HopSettings
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import encoding_weight
from gateway.passthrough import Passthrough, PassthroughResponse

__all__ = ["TIMEOUT_HEADER", "RestHop"]

logger = logging.getLogger("gateway.hops")

#: Seconds the upstream has left to answer, so a chain of gateways shrinks its deadline.
TIMEOUT_HEADER = "x-request-timeout"
JSON = "application/json"

T = TypeVar("T")


class RestHop(Hop):
    """The upstream's REST endpoints (``protocol`` "v1" or "v2"), over one pooled session.

    The session is created on first use, inside the running loop; `aclose` closes it. A
    `session` passed in is the caller's: it is used as is and left open. The upstream is a
    pool of replicas (`gateway.hops.replicas`): each attempt leases one, and the session
    reaches them all. `learner` holds what the upstream says about itself, and `pool` its
    replicas (a hop that learns the protocol passes in the ones it shares); by default the
    hop has its own, the replicas of one pool being taken to be the same server.
    """

    def __init__(
        self,
        settings: HopSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        learner: Learner | None = None,
        pool: Pool[ReplicaClient] | None = None,
        pooling: Pooling | None = None,
    ):
        if settings.protocol not in ("v1", "v2"):
            raise ValueError(f"RestHop speaks v1 or v2, not {settings.protocol!r}")
        self.settings = settings
        self.name = settings.role
        self.protocol = settings.protocol
        self._session = session
        self._owns_session = session is None
        # Built now, so that a missing or bad CA file stops the start, not the first request.
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        )
        self._model = segment(settings.model_name)
        self._negotiates = settings.rest_format == "auto" and settings.protocol == "v2"
        self._owns_pool = pool is None
        self._timeouts, self._url = CallTimeouts(), Urls()
        self.pool, self.learner = upstream_of(
            settings, pool, pooling, learner, self.probe, self.discover
        )

    # Hop

    async def infer(self, payload: Any, headers: Headers) -> Any:
        if isinstance(payload, Passthrough):
            return await self._passthrough("infer", payload, headers)
        if not isinstance(payload, InferRequest):
            raise unsupported_payload(payload)
        if self.protocol == "v2":
            return await self._infer_v2(payload, headers)
        body = await offload.run(lambda: v1_body(payload), encoding_weight(payload.inputs))
        answer = await self._post(self._v1_url("predict"), body, headers)
        return await offload.run(
            lambda: decoded(self.name, lambda: v1_response(orjson.loads(answer.body), payload)),
            offload.weight(len(answer.body)),
        )

    async def explain(self, payload: Any, headers: Headers) -> Any:
        """Explanations are free-form JSON: the parsed answer is returned as it is."""
        if isinstance(payload, Passthrough):
            return await self._passthrough("explain", payload, headers)
        if not isinstance(payload, InferRequest):
            raise unsupported_payload(payload)
        if self.protocol == "v1":
            return self._json(await self._post(self._v1_url("explain"), v1_body(payload), headers))
        # An explanation is read as JSON: its request does not ask for binary outputs.
        body, length = payload.rest_body(self.settings.rest_format == "binary")
        url = self._v2_url("explain", payload.model_version)
        return self._json(await self._post(url, body, headers, length))

    def upstream_pool(self) -> Pool[ReplicaClient]:
        return self.pool

    async def ready(self, model_name: str | None = None) -> bool:
        """Whether one replica of the upstream (or of its model `model_name`) is ready;
        False on any error. With active health checks, the server's readiness is theirs."""
        return await pool_ready(self.pool, self.probe, model_name)

    async def probe(self, replica: Replica[ReplicaClient], model_name: str | None = None) -> bool:
        """Whether `replica` (or its model `model_name`) says it is ready; raises when it
        does not answer."""
        name = segment(model_name or self.settings.model_name)
        if self.protocol == "v1":
            path = f"/v1/models/{name}"
        else:
            path = "/v2/health/ready" if model_name is None else f"/v2/models/{name}/ready"
        answer = await self._exchange(replica.client, "GET", path, None, {}, READY_TIMEOUT)
        return says_ready(self.protocol, answer.body)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        """``GET /v2/models/{name}`` of the hop's model (or `model_name`); None for v1."""
        if self.protocol == "v1":
            return None
        name = self.settings.model_name or model_name
        metadata: Metadata = await self._get_json(self._v2_url("", version, name), dict(headers))
        if name == self.settings.model_name and not version:
            self.learner.declared(metadata)
        return metadata

    async def server_metadata(self) -> dict[str, Any] | None:
        """``GET /v2``; None for v1, which has no server metadata."""
        if self.protocol == "v1":
            return None
        server: dict[str, Any] = await self._get_json("/v2", {}, READY_TIMEOUT)
        return server

    async def facts(self) -> UpstreamFacts:
        return await self.learner.learned()

    async def discover(self, timeout: float) -> UpstreamFacts:
        """Ask the upstream what it takes: ``GET /v2`` (is the binary extension listed?) and
        ``GET /v2/models/{name}`` (its declared inputs). v1 has neither: nothing to ask."""
        if self.protocol == "v1":
            return UpstreamFacts(("v1",))
        server = await self.document("/v2", timeout) or {}
        inputs = await self.declared(timeout)
        return UpstreamFacts(("v2",), takes_binary(server), server_name(server), inputs)

    async def document(self, path: str, timeout: float) -> dict[str, Any] | None:
        """``GET path`` as a JSON object; None when the upstream has no such resource (it
        answered 4xx)."""
        try:
            document: dict[str, Any] = await self._get_json(path, {}, timeout)
        except UpstreamStatusError as exc:
            if 400 <= exc.status < 500:
                logger.debug("hop %s: no %s: %s", self.name, path, exc)
                return None
            raise
        return document

    async def declared(self, timeout: float) -> Mapping[str, TensorSpec] | None:
        """The inputs the hop's model declares in its v2 metadata (None: none, or no model
        of that name yet)."""
        if not self.settings.model_name:
            return None
        return declared_inputs(await self.document(self._v2_url("", None), timeout))

    async def aclose(self) -> None:
        await self.learner.aclose()
        if self._owns_pool:
            await self.pool.aclose()
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        if protocol != self.protocol:
            return False
        if not binary:
            return True
        if self._negotiates:
            self.learner.soon()
            return self.learner.facts.binary
        # The operator chose JSON because the upstream lacks the binary extension (MLServer).
        return self.settings.rest_format != "json"

    # Requests

    async def _infer_v2(self, request: InferRequest, headers: Headers) -> InferResponse:
        body, length = await self._v2_body(request)
        answer = await self._post(
            self._v2_url("infer", request.model_version), body, headers, length
        )
        answer_length = decoded(self.name, lambda: json_length(answer))
        return await offload.run(
            lambda: decoded(
                self.name, lambda: InferResponse.from_bytes(answer.body, answer_length)
            ),
            rest_codec.decode_weight(answer.body, answer_length),
        )

    async def _v2_body(self, request: InferRequest) -> tuple[bytes, int | None]:
        """The request's body in the form the upstream takes (see the module's docstring),
        encoded off the loop when it is large."""
        weight = encoding_weight(request.inputs)
        if not self._negotiates:
            binary = self.settings.rest_format == "binary"
            return await offload.run(lambda: request.rest_body(binary), weight)
        facts = await self.learner.learned()
        return await offload.run(lambda: negotiated_body(request, facts.binary), weight)

    async def _passthrough(
        self, verb: str, payload: Passthrough, headers: Headers
    ) -> PassthroughResponse:
        binary = payload.json_length is not None
        if binary and self._negotiates:
            await self.learner.learned()
        if not self.accepts_passthrough(payload.protocol, binary):
            raise UnsupportedProtocol(
                payload.protocol,
                f"a {payload.protocol} body cannot pass through the {self.name} hop "
                f"({self.protocol}, rest format {self.settings.rest_format})",
            )
        if self.protocol == "v1":
            url = self._v1_url("predict" if verb == "infer" else verb)
        else:
            url = self._v2_url(verb, payload.model_version)
        answer = await self._post(url, payload.body, headers, payload.json_length)
        length = decoded(self.name, lambda: json_length(answer))
        if length is not None and verb == "infer":
            # Passed on unread, but not unchecked: a client must not get a 200 whose tensor
            # data is cut short (the decoding path refuses the same answer with a 502).
            decoded(self.name, lambda: rest_codec.check_binary_sizes(answer.body, length))
        return PassthroughResponse(answer.body, length, content_type(answer, self.name))

    def _json(self, answer: Answer) -> Any:
        return decoded(self.name, lambda: orjson.loads(answer.body))

    async def _get_json(self, path: str, headers: Headers, cap: float | None = None) -> Any:
        answer = await self._send("GET", path, None, headers, cap)
        document = self._json(answer)
        if not isinstance(document, dict):
            raise UpstreamProtocolError(
                f"the {self.name} answered GET {path} with no JSON object", upstream=self.name
            )
        return document

    def _v1_url(self, verb: str) -> str:
        return f"/v1/models/{self._model}:{verb}"

    def _v2_url(self, verb: str, version: str | None, model: str | None = None) -> str:
        """A model's v2 path: ``.../{verb}``, or the model's metadata when `verb` is ""."""
        name = self._model if model is None else segment(model)
        versioned = f"/versions/{segment(version)}" if version else ""
        tail = f"/{verb}" if verb else ""
        return f"/v2/models/{name}{versioned}{tail}"

    # Transport

    async def _post(
        self, path: str, body: bytes, headers: Headers, json_length: int | None = None
    ) -> Answer:
        outbound = dict(headers)
        if json_length is None:
            outbound["content-type"] = JSON
        else:
            outbound["content-type"] = rest_codec.BINARY_CONTENT_TYPE
            outbound[rest_codec.INFERENCE_HEADER.lower()] = str(json_length)
        return await self._send("POST", path, body, outbound)

    async def _send(
        self, method: str, path: str, body: bytes | None, headers: Headers, cap: float | None = None
    ) -> Answer:
        """One attempt: an exchange with a replica the pool leases, which learns how it
        went (from the error raised, if any)."""
        if not self.pool.started:
            await self.pool.start()
        with leased(self.pool) as lease:
            name_replica(lease.endpoint)
            try:
                return await self._exchange(lease.client, method, path, body, headers, cap)
            except UpstreamStatusError as exc:
                if exc.status == 404 and method == "POST":
                    where = f"POST {lease.client.base_url}{path}"
                    raise not_found(exc, self.name, where, self.protocol) from exc.__cause__
                raise

    async def _exchange(
        self,
        replica: ReplicaClient,
        method: str,
        path: str,
        body: bytes | None,
        headers: Headers,
        cap: float | None = None,
    ) -> Answer:
        """One HTTP exchange with `replica` within the call's time budget, its errors mapped
        to ours.

        `headers` is a dict this call owns: the timeout header and ``Host`` are added."""
        timeout = call_timeout(self.settings, cap)
        headers[TIMEOUT_HEADER], limit = self._timeouts(timeout)
        headers["Host"] = replica.host_header
        try:
            async with self._client().request(
                method,
                self._url(replica.base_url, path),
                data=None if body is None else body_payload(body),
                headers=headers,
                timeout=limit,
                # A redirected POST would turn into a GET; an inference call is not redirected.
                allow_redirects=False,
                server_hostname=replica.server_hostname,
            ) as response:
                body = await read_answer(response, self.settings.max_response_bytes, self.name)
                answer = Answer(response.status, response.headers, body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = upstream_error(exc, self.name, timeout, replica.base_url)
            if isinstance(error, UpstreamUnavailable | WrongProtocol) or isinstance(
                exc, aiohttp.ServerDisconnectedError
            ):
                # Gone, restarted or replaced: what it takes is asked again at the next use.
                self.learner.forget()
            raise error from exc
        merge_server_timing(answer.headers.getall("Server-Timing", ()), self.name)
        return successful(answer, self.name, path)

    def session(self) -> aiohttp.ClientSession:
        """The hop's connection pool (made now if need be), for another hop to the same
        upstream to share; it stays this hop's to close."""
        return self._client()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(self.settings.max_connections, self._ssl)
        return self._session
