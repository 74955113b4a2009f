"""`GrpcHop`: Open Inference Protocol v2 over gRPC, on one grpc.aio channel per replica.

ModelInfer sends and receives bytes: requests are built by `InferRequest.to_grpc_bytes` and
answers read by `InferResponse.from_grpc_bytes`, so raw tensor contents never go through
protobuf. grpc's errors become ours in `gateway.hops.grpc_wire.upstream_error`, one table,
which says what Retrying may repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from gateway import offload
from gateway._proto import SERVICE_NAME, pb
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import metadata as metadata_codec
from gateway.errors import (
    UnsupportedProtocol,
    UpstreamStatusError,
    UpstreamUnavailable,
    WrongProtocol,
)
from gateway.hops.answers import too_large
from gateway.hops.base import Headers, Hop, Metadata
from gateway.hops.common import (
    READY_TIMEOUT,
    call_timeout,
    decoded,
    merge_server_timing,
    not_found,
    unsupported_payload,
)
from gateway.hops.facts import Learner, UpstreamFacts, declared_inputs, server_name
from gateway.hops.grpc_wire import grpc_metadata, metadata_values, upstream_error
from gateway.hops.pool import Pool, Replica, leased
from gateway.hops.replicas import Pooling, ReplicaClient, name_replica, pool_ready, upstream_of
from gateway.hops.settings import HopSettings
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import encoding_weight
from gateway.passthrough import Passthrough, PassthroughResponse

__all__ = ["GrpcHop"]

logger = logging.getLogger("gateway.hops")

Code = grpc.StatusCode
PROTOCOL = "grpc-v2"
MODEL_NAME_FIELD = pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER

# As large as the servers' default limits: a hop should not refuse what its server accepted.
MAX_MESSAGE_BYTES = 256 << 20

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Pings find a connection that died during a long call. Servers by default refuse pings
    # closer than 5 minutes apart when no data flows, but tolerate the two gRPC sends then.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # gRPC waits up to 2 minutes between reconnection attempts by default: an upstream that
    # restarts after a long outage is found again within 5 seconds instead.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # gRPC shares connections ("subchannels") between the channels of a process that have the
    # same target, backoff included: a new channel to an upstream another channel is backing
    # off from would fail for as long. Each hop's channel keeps its own.
    ("grpc.use_local_subchannel_pool", 1),
)


def channel_options(settings: HopSettings) -> tuple[tuple[str, int | str], ...]:
    """`CHANNEL_OPTIONS`, answers limited to the hop's own size limit."""
    receive = "grpc.max_receive_message_length"
    return (
        *(option for option in CHANNEL_OPTIONS if option[0] != receive),
        (receive, settings.max_response_bytes),
    )


# How gRPC words an answer over the channel's receive limit (RESOURCE_EXHAUSTED, which an
# upstream may also answer of its own: then it is passed on as such).
_OVER_LIMIT = "Received message larger than max"

# A channel that failed to connect is replaced (its backoff would fail calls until it ends,
# 0.2 to 5 s, though the upstream may be back), but not more often than this: an upstream
# that stays down is not asked to accept a connection for each call.
RENEW_PAUSE = 0.25


class GrpcHop(Hop):
    """The upstream's ``inference.GRPCInferenceService``, over one channel per replica.

    The upstream is a pool of replicas (`gateway.hops.replicas`): each attempt leases one.
    A replica's channel is opened on first use, inside the running loop; `aclose` closes
    them. A `channel` passed in is the caller's: every call goes on it, and it is left open.
    A channel of ours that failed to connect is replaced by a fresh one for the next call
    (`RENEW_PAUSE`). `learner` holds what the upstream says about itself, and `pool` its
    replicas (a hop that learns the protocol passes in the ones it shares); by default the
    hop has its own.
    """

    def __init__(
        self,
        settings: HopSettings,
        channel: grpc.aio.Channel | None = None,
        *,
        learner: Learner | None = None,
        pool: Pool[ReplicaClient] | None = None,
        pooling: Pooling | None = None,
    ) -> None:
        if settings.protocol != PROTOCOL:
            raise ValueError(f"GrpcHop speaks {PROTOCOL}, not {settings.protocol!r}")
        self.settings = settings
        self.name = settings.role
        self.protocol = PROTOCOL
        # The caller's channel, and its method callables (made once each).
        self._channel = channel
        self._rpcs: dict[str, Any] = {}
        self._credentials: grpc.ChannelCredentials | None = None
        if settings.use_ssl or settings.host.startswith("https://"):
            # Read now, so that a missing CA file stops the start, not the first request.
            roots = None
            if settings.ca_file:
                with open(settings.ca_file, "rb") as file:
                    roots = file.read()
            self._credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        self._owns_pool = pool is None
        self.pool, self.learner = upstream_of(
            settings, pool, pooling, learner, self.probe, self.discover
        )

    async def infer(self, payload: Any, headers: Headers) -> Any:
        if isinstance(payload, Passthrough):
            if not self.accepts_passthrough(payload.protocol, payload.json_length is not None):
                raise UnsupportedProtocol(
                    payload.protocol,
                    f"a {payload.protocol} body cannot pass through the {self.name} hop "
                    f"({PROTOCOL})",
                )
            body = payload.body
            if self.settings.model_name and payload.model_name != self.settings.model_name:
                # A singular field's last occurrence wins: appending renames without parsing.
                name = self.settings.model_name.encode()
                body = grpc_codec.join_raw(body, [name], MODEL_NAME_FIELD)
            answer = await self._model_infer(body, headers, payload.model_name)
            return PassthroughResponse(answer, None, "application/grpc")
        if isinstance(payload, InferRequest):
            return await self._infer(payload, headers)
        raise unsupported_payload(payload)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        raise UnsupportedProtocol(
            PROTOCOL,
            "the v2 gRPC protocol has no explain; point --explainer_host at a REST explainer",
        )

    def upstream_pool(self) -> Pool[ReplicaClient]:
        return self.pool

    async def ready(self, model_name: str | None = None) -> bool:
        """Whether one replica of the upstream (or of its model `model_name`) is ready;
        False on any error. With active health checks, the server's readiness is theirs."""
        return await pool_ready(self.pool, self.probe, model_name)

    async def probe(self, replica: Replica[ReplicaClient], model_name: str | None = None) -> bool:
        """ServerReady, or ModelReady for `model_name`, of `replica`; raises when it does not
        answer."""
        if model_name is None:
            request: Any = pb.ServerReadyRequest()
            answer = await self._call_on(replica.client, "ServerReady", request, READY_TIMEOUT)
        else:
            request = pb.ModelReadyRequest(name=model_name)
            answer = await self._call_on(replica.client, "ModelReady", request, READY_TIMEOUT)
        return bool(answer.ready)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata:
        """ModelMetadata of the hop's model (or `model_name`), in its JSON form."""
        name = self.settings.model_name or model_name
        request = pb.ModelMetadataRequest(name=name, version=version or "")
        answer = await self._call("ModelMetadata", request, None, headers)
        metadata = metadata_codec.model_metadata_dict(answer)
        if name == self.settings.model_name and not version:
            self.learner.declared(metadata)
        return metadata

    async def server_metadata(self) -> dict[str, Any]:
        answer = await self._call("ServerMetadata", pb.ServerMetadataRequest(), READY_TIMEOUT)
        return metadata_codec.server_metadata_dict(answer)

    async def facts(self) -> UpstreamFacts:
        return await self.learner.learned()

    async def discover(self, timeout: float) -> UpstreamFacts:
        """Ask the upstream what it is: ServerMetadata, and ModelMetadata of the hop's model
        (whose declared inputs requests are checked against)."""
        request = pb.ServerMetadataRequest()
        server = metadata_codec.server_metadata_dict(
            await self._call("ServerMetadata", request, timeout)
        )
        inputs = None
        if self.settings.model_name:
            model = pb.ModelMetadataRequest(name=self.settings.model_name)
            try:
                answer = await self._call("ModelMetadata", model, timeout)
            except UpstreamStatusError as exc:  # no such model (yet): nothing declared
                logger.debug("hop %s: no model metadata: %s", self.name, exc)
            else:
                inputs = declared_inputs(metadata_codec.model_metadata_dict(answer))
        return UpstreamFacts((PROTOCOL,), False, server_name(server), inputs)

    async def aclose(self) -> None:
        self._channel = None
        self._rpcs.clear()
        await self.learner.aclose()
        if self._owns_pool:
            await self.pool.aclose()

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        return protocol == PROTOCOL

    async def _infer(self, request: InferRequest, headers: Headers) -> InferResponse:
        model_name = request.model_name
        if self.settings.model_name and request.model_name != self.settings.model_name:
            # The same tensors under the upstream's model name; the caller's request is kept.
            request = InferRequest(
                self.settings.model_name,
                request.inputs,
                request.id,
                parameters=request.parameters,
                request_outputs=request.request_outputs,
                model_version=request.model_version,
            )
        data = await offload.run(request.to_grpc_bytes, encoding_weight(request.inputs))
        answer = await self._model_infer(data, headers, model_name)
        return await offload.run(
            lambda: decoded(self.name, lambda: InferResponse.from_grpc_bytes(answer)),
            decoded(
                self.name, lambda: grpc_codec.decode_weight(answer, grpc_codec.RAW_OUTPUT_FIELD)
            ),
        )

    async def _model_infer(self, data: bytes, headers: Headers, model_name: str) -> bytes:
        """One ModelInfer call within the call's time budget, its errors mapped to ours."""
        try:
            answer: bytes = await self._call("ModelInfer", data, None, headers)
        except UpstreamStatusError as exc:
            if exc.code == Code.NOT_FOUND:
                name = self.settings.model_name or model_name
                where = f"ModelInfer of model {name!r} at {self.pool.endpoints.target}"
                raise not_found(exc, self.name, where, PROTOCOL) from exc.__cause__
            raise
        return answer

    async def _call(
        self, method: str, request: Any, cap: float | None, headers: Headers | None = None
    ) -> Any:
        """One attempt: a unary call (bytes in and out for ModelInfer, messages otherwise)
        to a replica the pool leases, which learns how it went."""
        if not self.pool.started:
            await self.pool.start()
        with leased(self.pool) as lease:
            name_replica(lease.endpoint)
            return await self._call_on(lease.client, method, request, cap, headers)

    async def _call_on(
        self,
        replica: ReplicaClient,
        method: str,
        request: Any,
        cap: float | None,
        headers: Headers | None = None,
    ) -> Any:
        """One unary call to `replica` within the call's time budget (and `cap`), its errors
        mapped to ours."""
        timeout = call_timeout(self.settings, cap)
        channel = self._open(replica)
        rpc = self._rpc(replica, channel, method, type(request))
        replica.calls[channel] = replica.calls.get(channel, 0) + 1
        call = None
        try:
            call = rpc(request, timeout=timeout, metadata=grpc_metadata(headers or {}))
            try:
                answer = await call
            except grpc.aio.AioRpcError as exc:
                self._timings(exc.initial_metadata(), exc.trailing_metadata())
                if exc.code() == Code.RESOURCE_EXHAUSTED and _OVER_LIMIT in (exc.details() or ""):
                    exc.__traceback__ = None
                    raise too_large(self.name, self.settings.max_response_bytes) from exc
                error = upstream_error(exc, self.name, timeout, replica.endpoint.authority)
                if isinstance(error, UpstreamUnavailable | WrongProtocol):
                    self._not_connected(replica, channel)
                # Its frames hold the call, which holds its channel: see `_close_if_done`.
                exc.__traceback__ = None
                raise error from exc
            if method == "ModelInfer":
                self._timings(await call.initial_metadata(), await call.trailing_metadata())
            return answer
        finally:
            call = None
            replica.calls[channel] -= 1
            self._close_if_done(replica, channel)

    def _not_connected(self, replica: ReplicaClient, channel: grpc.aio.Channel) -> None:
        """A call on `channel` found no connection: learn what the upstream is when next
        needed, and give the replica's next call a fresh channel (one not backing off)."""
        self.learner.forget()
        now = time.monotonic()
        if channel is not replica.channel or self._channel is not None:
            return
        if now - replica.renewed < RENEW_PAUSE:
            return
        replica.renewed = now
        replica.channel = None
        replica.rpcs.clear()
        # Closed once the calls still on it are done (they fail: it is not connected), so
        # that a flapping upstream does not leave replaced channels connecting behind.
        self._close_if_done(replica, channel)

    def _close_if_done(self, replica: ReplicaClient, channel: grpc.aio.Channel) -> None:
        """Close `channel` once it is replaced and no call is left on it.

        gRPC core keeps a closed channel (and its connection, or its attempts to connect)
        until the last call made on it is freed, so `_call_on` lets go of each call as it
        ends, its error's traceback included: otherwise a flapping upstream would leave
        replaced channels connecting until the garbage collector ran."""
        if channel is replica.channel or replica.calls.get(channel, 0) > 0:
            return
        replica.calls.pop(channel, None)
        if channel is self._channel:
            return
        task = asyncio.ensure_future(channel.close(None))
        replica.closing.add(task)
        task.add_done_callback(replica.closing.discard)

    def _rpc(
        self, replica: ReplicaClient, channel: grpc.aio.Channel, method: str, request: Any
    ) -> Any:
        """A callable for `method` on `channel`: bytes in and out for ModelInfer, messages
        otherwise."""
        rpcs = self._rpcs if channel is self._channel else replica.rpcs
        rpc = rpcs.get(method)
        if rpc is None:
            response = None if request is bytes else getattr(pb, f"{method}Response")
            rpc = rpcs[method] = channel.unary_unary(
                f"/{SERVICE_NAME}/{method}",
                request_serializer=None if request is bytes else request.SerializeToString,
                response_deserializer=None if response is None else response.FromString,
            )
        return rpc

    def _open(self, replica: ReplicaClient) -> grpc.aio.Channel:
        if self._channel is not None:
            return self._channel
        if replica.channel is None:
            endpoint = replica.endpoint
            # The name as written is the call's authority (and, with TLS, what the
            # certificate is checked against), though the channel goes to one address.
            options = (
                *channel_options(self.settings),
                ("grpc.default_authority", endpoint.authority),
            )
            if self._credentials is None:
                replica.channel = grpc.aio.insecure_channel(endpoint.hostport, options=options)
            else:
                options += (("grpc.ssl_target_name_override", endpoint.host),)
                replica.channel = grpc.aio.secure_channel(
                    endpoint.hostport, self._credentials, options=options
                )
        return replica.channel

    def _timings(self, *metadata: Any) -> None:
        merge_server_timing(metadata_values(metadata, "server-timing"), self.name)
