"""`GrpcHop`: Open Inference Protocol v2 over gRPC, on one grpc.aio channel.

ModelInfer sends and receives bytes: requests are built by `InferRequest.to_grpc_bytes` and
answers read by `InferResponse.from_grpc_bytes`, so raw tensor contents never go through
protobuf. grpc's errors become ours in `upstream_error`, one function::

    status                                 ours                                safe to retry
    UNAVAILABLE, never connected           UpstreamUnavailable                 yes: not sent
    UNAVAILABLE (connection lost, or the   UpstreamStatusError(503)            yes (UNAVAILABLE
      upstream's own answer)                                                    is gRPC's "retry")
    DEADLINE_EXCEEDED                      UpstreamTimeout                     only if asked for
    any other code                         UpstreamStatusError(HTTP_FOR_GRPC)  no
    a message that does not decode         UpstreamProtocolError               no
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc

from gateway import offload
from gateway._proto import SERVICE_NAME, pb
from gateway.codecs import grpc as grpc_codec
from gateway.errors import (
    HTTP_FOR_GRPC,
    InvalidInput,
    UnsupportedProtocol,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.header_rules import valid_grpc_metadata
from gateway.hops.answers import too_large
from gateway.hops.base import Headers, Hop
from gateway.hops.common import (
    READY_TIMEOUT,
    call_timeout,
    decoded,
    merge_server_timing,
    retry_after,
    unsupported_payload,
)
from gateway.hops.settings import HopSettings
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import encoding_weight
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.sanitize import upstream_text

__all__ = ["GrpcHop", "upstream_error"]

logger = logging.getLogger("gateway.hops")

Code = grpc.StatusCode
PROTOCOL = "grpc-v2"
MODEL_NAME_FIELD = pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER

# As large as the servers' default limits: a hop should not refuse what its server accepted.
MAX_MESSAGE_BYTES = 256 << 20

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
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
)


def channel_options(settings: HopSettings) -> tuple[tuple[str, int], ...]:
    """`CHANNEL_OPTIONS`, answers limited to the hop's own size limit."""
    receive = "grpc.max_receive_message_length"
    return (
        *(option for option in CHANNEL_OPTIONS if option[0] != receive),
        (receive, settings.max_response_bytes),
    )


# How gRPC words an answer over the channel's receive limit (RESOURCE_EXHAUSTED, which an
# upstream may also answer of its own: then it is passed on as such).
_OVER_LIMIT = "Received message larger than max"
# How gRPC words the failure of a call that no connection could carry (so it was not sent).
_NOT_CONNECTED = (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "errors resolving",
    "name resolution",
    "empty address list",
)


class GrpcHop(Hop):
    """The upstream's ``inference.GRPCInferenceService``, over one channel.

    The channel is opened on first use, inside the running loop; `aclose` closes it. A
    `channel` passed in is the caller's: it is used as is and left open.
    """

    def __init__(self, settings: HopSettings, channel: grpc.aio.Channel | None = None) -> None:
        if settings.protocol != PROTOCOL:
            raise ValueError(f"GrpcHop speaks {PROTOCOL}, not {settings.protocol!r}")
        self.settings = settings
        self.name = settings.role
        self.protocol = PROTOCOL
        self._channel = channel
        self._owns_channel = channel is None
        # Method callables of the open channel, made once each.
        self._rpcs: dict[str, Any] = {}
        self._credentials: grpc.ChannelCredentials | None = None
        if settings.use_ssl or settings.host.startswith("https://"):
            # Read now, so that a missing CA file stops the start, not the first request.
            roots = None
            if settings.ca_file:
                with open(settings.ca_file, "rb") as file:
                    roots = file.read()
            self._credentials = grpc.ssl_channel_credentials(root_certificates=roots)

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
            answer = await self._model_infer(body, headers)
            return PassthroughResponse(answer, None, "application/grpc")
        if isinstance(payload, InferRequest):
            return await self._infer(payload, headers)
        raise unsupported_payload(payload)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        raise UnsupportedProtocol(
            PROTOCOL,
            "the v2 gRPC protocol has no explain; point --explainer_host at a REST explainer",
        )

    async def ready(self, model_name: str | None = None) -> bool:
        """ServerReady, or ModelReady for `model_name`; False on any error."""
        try:
            timeout = call_timeout(self.settings, READY_TIMEOUT)
            if model_name is None:
                server = self._rpc("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse)
                answer = await server(pb.ServerReadyRequest(), timeout=timeout)
            else:
                model = self._rpc("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse)
                answer = await model(pb.ModelReadyRequest(name=model_name), timeout=timeout)
            return bool(answer.ready)
        except Exception as exc:  # a probe reports, it does not raise
            logger.debug("hop %s: readiness probe failed: %s", self.name, exc)
            return False

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        self._rpcs.clear()
        if channel is not None and self._owns_channel:
            await channel.close(None)

    def accepts_passthrough(self, protocol: str, binary: bool) -> bool:
        return protocol == PROTOCOL

    async def _infer(self, request: InferRequest, headers: Headers) -> InferResponse:
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
        answer = await self._model_infer(data, headers)
        return await offload.run(
            lambda: decoded(self.name, lambda: InferResponse.from_grpc_bytes(answer)),
            decoded(
                self.name, lambda: grpc_codec.decode_weight(answer, grpc_codec.RAW_OUTPUT_FIELD)
            ),
        )

    async def _model_infer(self, data: bytes, headers: Headers) -> bytes:
        """One ModelInfer call within the call's time budget, its errors mapped to ours."""
        timeout = call_timeout(self.settings)
        call = self._rpc("ModelInfer")(data, timeout=timeout, metadata=_metadata(headers))
        try:
            answer: bytes = await call
        except grpc.aio.AioRpcError as exc:
            self._timings(exc.initial_metadata(), exc.trailing_metadata())
            if exc.code() == Code.RESOURCE_EXHAUSTED and _OVER_LIMIT in (exc.details() or ""):
                raise too_large(self.name, self.settings.max_response_bytes) from exc
            raise upstream_error(exc, self.name, timeout) from exc
        self._timings(await call.initial_metadata(), await call.trailing_metadata())
        return answer

    def _rpc(self, method: str, request: Any = None, response: Any = None) -> Any:
        """A callable for `method`; bytes in and out unless message classes are given."""
        rpc = self._rpcs.get(method)
        if rpc is None:
            rpc = self._rpcs[method] = self._open().unary_unary(
                f"/{SERVICE_NAME}/{method}",
                request_serializer=request.SerializeToString if request is not None else None,
                response_deserializer=response.FromString if response is not None else None,
            )
        return rpc

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            target = self.settings.target
            options = channel_options(self.settings)
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        return self._channel

    def _timings(self, *metadata: Any) -> None:
        merge_server_timing(_values(metadata, "server-timing"), self.name)


def upstream_error(exc: grpc.aio.AioRpcError, role: str, timeout: float) -> UpstreamError:
    """Our error for a failed call to `role` (raise it ``from exc``)."""
    code = exc.code()
    details = upstream_text(exc.details() or "") or code.name
    if code == Code.DEADLINE_EXCEEDED:
        return UpstreamTimeout(
            f"the {role} did not answer within {timeout:.3f} s: {details}", upstream=role
        )
    if code == Code.UNAVAILABLE and any(m in details.lower() for m in _NOT_CONNECTED):
        return UpstreamUnavailable(f"cannot connect to the {role}: {details}", upstream=role)
    return UpstreamStatusError(
        details,
        status=HTTP_FOR_GRPC.get(code, 500),
        code=code,
        upstream=role,
        retry_after=retry_after(
            next(iter(_values([exc.trailing_metadata()], "retry-after")), None)
        ),
    )


def _metadata(headers: Headers) -> tuple[tuple[str, str], ...]:
    """`headers` as gRPC metadata. gRPC refuses what it cannot carry (text that is not
    printable ASCII, say, which HTTP allows) by failing the call: refused here instead."""
    metadata = []
    for key, value in headers.items():
        key = key.lower()
        if not valid_grpc_metadata(key, value):
            raise InvalidInput(f"header {key!r} cannot be passed on as gRPC metadata")
        metadata.append((key, value))
    return tuple(metadata)


def _values(metadata: Iterable[Any], key: str) -> list[str]:
    """The text values of `key` in some metadata collections (None ones are skipped)."""
    return [
        value
        for collection in metadata
        for name, value in (collection or ())
        if name == key and isinstance(value, str)
    ]
