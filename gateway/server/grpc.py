"""The gRPC front door: ``inference.GRPCInferenceService`` (Open Inference Protocol v2).

Each method decodes its message, calls the `DataPlane`, and encodes the answer. The method
table is built from the service descriptor, so the .proto is its one source of truth.
ModelInfer never lets protobuf see tensor data: it takes the serialized request and answers
with serialized bytes (see `gateway.codecs.grpc`). Every method takes and returns bytes, so
a malformed message is refused by our error mapping (INVALID_ARGUMENT), like any bad input.
ModelInfer runs in the request envelope both doors share (`gateway.server.envelope`): given a
tracer it is a SERVER span, and its stage times go back in the ``server-timing`` trailer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from opentelemetry.trace import Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from gateway import offload, tracing_ids
from gateway._proto import SERVICE_NAME, pb
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import metadata as metadata_codec
from gateway.codecs.limits import DecodeLimits
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError, InferenceError, InvalidInput, grpc_code
from gateway.header_rules import REQUEST_ID, usable_request_id
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.messages import encoding_weight
from gateway.metrics import Metrics
from gateway.model import InferenceVerb
from gateway.passthrough import Passthrough, PassthroughResponse
from gateway.server import grpc_metadata
from gateway.server.access_log import GrpcAccessLogger
from gateway.server.drain import Drain, expired_message
from gateway.server.envelope import Envelope, SpanStart, request_id
from gateway.server.grpc_metadata import Context, Headers
from gateway.settings import ServerSettings

__all__ = ["PROTOCOL", "create_grpc_server", "start_grpc_server"]

logger = logging.getLogger("gateway.server.grpc")

PROTOCOL = "grpc-v2"
_MODEL_NAME_FIELD = pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER
_ID_FIELD = pb.ModelInferRequest.ID_FIELD_NUMBER
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

Behavior = Callable[[Any, Context], Awaitable[Any]]

# Codes that mean this server failed (the others are the client's doing), as OpenTelemetry's
# conventions for gRPC server spans have it.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


# The most client metadata one call may carry, bytes.
GRPC_METADATA_LIMIT = 16 << 10


def create_grpc_server(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    *,
    tracer: Tracer | None = None,
    service_name: str | None = None,
    drain: Drain | None = None,
) -> grpc.aio.Server:
    """A gRPC server for `dataplane`, not yet bound or started (call it inside the loop);
    `tracer` None: no spans; `service_name`: what its Server-Timing trailers call it;
    `drain`: where the server's stop finds the calls in flight."""
    servicer = _Servicer(dataplane, settings.decode_limits)
    envelope = Envelope(dataplane, metrics, tracer, service_name)
    access = GrpcAccessLogger()
    drain = drain or Drain(settings.grace_period)
    handlers = {}
    for method in SERVICE.methods:
        # ModelInfer parses its own bytes, so raw contents skip protobuf.
        parse = None if method.name == "ModelInfer" else getattr(pb, method.input_type.name)
        behavior = getattr(servicer, method.name)
        if method.name == "ModelInfer":
            # Only inference is in the envelope: counted, measured and (given a tracer)
            # traced; health and metadata probes would flood the traces. Its access line is
            # the envelope's, which knows the model and the request id.
            behavior = _enveloped(envelope, drain, behavior, access)
            guarded = _guarded(method.name, behavior, parse, None)
        else:
            guarded = _guarded(method.name, behavior, parse, access)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(guarded)
    server = grpc.aio.server(
        # Every handler here is async, so this pool runs no request: gRPC uses it only for sync
        # handlers (its threads start lazily, none ever will). `max_threads` is deliberately not
        # `maximum_concurrent_rpcs`: async requests mostly wait on upstream hops, and capping
        # them at a thread count (4 by default) would throttle a gateway to 4 requests. Sync
        # user handlers run in the event loop's default executor, which the ModelServer sizes.
        migration_thread_pool=ThreadPoolExecutor(settings.max_threads),
        options=[
            ("grpc.max_send_message_length", settings.grpc_max_send_message_length),
            ("grpc.max_receive_message_length", settings.grpc_max_receive_message_length),
            # gRPC shares ports by default; only worker processes should (see server.workers).
            ("grpc.so_reuseport", int(settings.grpc_reuse_port)),
            # Between its soft and hard metadata limits gRPC refuses calls at random: one limit
            # (what is too large to forward gets our own refusal, in gateway.hops.headers).
            ("grpc.max_metadata_size", GRPC_METADATA_LIMIT),
            ("grpc.absolute_max_metadata_size", GRPC_METADATA_LIMIT),
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    return server


async def start_grpc_server(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    port: int,
    *,
    tracer: Tracer | None = None,
    service_name: str | None = None,
    drain: Drain | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Create, bind (port 0 picks a free port) and start a server, with TLS given
    `credentials`; returns it and its port."""
    server = create_grpc_server(
        dataplane, settings, metrics, tracer=tracer, service_name=service_name, drain=drain
    )
    address = f"{settings.listen_address}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if not bound:  # older gRPC reports a failed bind as port 0 instead of raising
        raise OSError(f"cannot listen on {settings.listen_address}:{port}")
    await server.start()
    return server, bound


def _guarded(
    name: str, behavior: Behavior, message: Any, access: GrpcAccessLogger | None
) -> Behavior:
    """`behavior` behind our error mapping, taking and returning serialized messages; each
    call gets an access line when `access` is given."""

    async def call(data: bytes, context: Context) -> bytes:
        started = time.perf_counter()
        code, size, request = grpc.StatusCode.OK, 0, None
        try:
            request = data if message is None else _parse(message, data)
            response = await behavior(request, context)
            body = response if isinstance(response, bytes) else response.SerializeToString()
            size = len(body)
            return body
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code = _status_code(exc)
            await _abort(context, name, exc)
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if access is not None and access.enabled:
                model = getattr(request, "name", "") or getattr(request, "model_name", "")
                headers = grpc_metadata.headers(context)
                access.log(grpc_metadata.peer_address(context.peer()), name, model, code.name, size,
                           time.perf_counter() - started, headers.get(REQUEST_ID, ""))  # fmt: skip

    return call


def _parse(message: Any, data: bytes) -> Any:
    try:
        return message.FromString(data)
    except Exception as exc:  # protobuf's DecodeError differs between runtimes
        raise InvalidInput(f"malformed {message.__name__}: {exc}") from None


def _status_code(exc: Exception) -> grpc.StatusCode:
    """The code a client receives when `exc` ends its call."""
    if isinstance(exc, GatewayError):
        return grpc_code(exc)
    return grpc.StatusCode.INTERNAL


async def _abort(
    context: Context,
    method: str,
    exc: Exception,
    trailers: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with the status `exc` maps to (and `trailers`): the one place that does."""
    code = _status_code(exc)
    if isinstance(exc, GatewayError):
        logger.debug("%s failed: %s %s", method, code.name, exc)
        if exc.retry_after is not None:
            trailers += (("retry-after", str(math.ceil(exc.retry_after))),)
        await context.abort(code, str(exc), trailers)
    # Not ours: a bug or an unexpected library error. Its text may hold internals, so the
    # client gets a short message and the log gets the traceback.
    logger.exception("%s failed", method, exc_info=exc)
    await context.abort(code, f"internal error: {type(exc).__name__}", trailers)


class _Servicer:
    """The service's methods, named as in the .proto."""

    def __init__(self, dataplane: DataPlane, limits: DecodeLimits | None = None) -> None:
        self.dataplane = dataplane
        self.limits = limits or DecodeLimits()

    async def ServerLive(self, request: Any, context: Context) -> Any:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: Any, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=await self.dataplane.ready())

    async def ModelReady(self, request: Any, context: Context) -> Any:
        ready = await self.dataplane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        meta = self.dataplane.metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        meta = await self.dataplane.model_metadata(request.name, request.version or None)
        return metadata_codec.model_metadata_message(meta)

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        # One repository per server: `repository_name` has nothing to choose between.
        index = await self.dataplane.repository_index(ready_only=request.ready)
        entry = pb.RepositoryIndexResponse.ModelIndex
        models = [
            entry(name=e["name"], state=e["state"], reason=e.get("reason", "")) for e in index
        ]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse(model_name=request.model_name, isLoaded=True)

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse(model_name=request.model_name, isUnloaded=True)

    async def ModelInfer(self, data: bytes, call: _Call) -> bytes:
        """Decode, call the model, encode: the envelope around it is `_Call`'s."""
        name = grpc_codec.string_field(data, _MODEL_NAME_FIELD)
        request = await self._decode(name, data, call)
        with call.inbound.admitted():
            result = await self.dataplane.infer(name, request, call.headers, call.response_headers)
        if isinstance(result, InferResponse):
            return await offload.run(lambda: _encode(result), encoding_weight(result.outputs))
        return _encode(result)

    async def _decode(self, name: str, data: bytes, call: _Call) -> InferRequest | Passthrough:
        """The request, or its bytes when they can go to the predictor undecoded."""
        request: InferRequest | Passthrough
        if self.dataplane.passthrough(name, PROTOCOL, True, InferenceVerb.PREDICT):
            request = Passthrough(PROTOCOL, name, data)
            message_id = grpc_codec.string_field(data, _ID_FIELD)
        else:
            limits = self.limits
            request = await offload.run(
                lambda: InferRequest.from_grpc_bytes(data, limits),
                grpc_codec.decode_weight(data, grpc_codec.RAW_INPUT_FIELD),
            )
            message_id = request.id or ""
        call.adopt(message_id)
        call.inbound.model = name
        return request


class _Call:
    """ModelInfer's side of the envelope (`gateway.server.envelope`): the client's metadata
    in; the model's response metadata, the trailers and the status code out."""

    __slots__ = ("access", "context", "drain", "headers", "inbound", "response_headers")

    def __init__(
        self, envelope: Envelope, drain: Drain, context: Context, access: GrpcAccessLogger
    ) -> None:
        self.access = access
        self.drain = drain
        self.context = context
        self.headers = grpc_metadata.headers(context)
        ctx = envelope.context(PROTOCOL, request_id(self.headers), grpc_metadata.deadline(context))
        span = _span_start(context, self.headers) if envelope.tracer is not None else None
        self.inbound = envelope.inbound(ctx, span, grpc.StatusCode.OK.name)
        # Headers the model set for the response (return_response_headers=True).
        self.response_headers: Headers = {}

    def adopt(self, message_id: str) -> None:
        """Take the message's `id` as the request id when the metadata had none."""
        if REQUEST_ID not in self.headers and usable_request_id(message_id):
            self.inbound.context.request_id = message_id

    async def run(self, behavior: Callable[[bytes, _Call], Awaitable[bytes]], data: bytes) -> bytes:
        inbound, context = self.inbound, self.context
        code = grpc.StatusCode.OK
        started, size = time.perf_counter(), 0
        with inbound, self.drain.tracked():
            try:
                body = await behavior(data, self)
                size = len(body)
                metadata = grpc_metadata.response_metadata(self.response_headers)
                if metadata:
                    await context.send_initial_metadata(metadata)
                context.set_trailing_metadata(grpc_metadata.trailers(inbound.context))
                return body
            except Exception as exc:
                code = _status_code(exc)
                await _abort(context, "ModelInfer", exc, grpc_metadata.trailers(inbound.context))
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and self.drain.cut_off():
                    code = grpc.StatusCode.UNAVAILABLE
                    await context.abort(code, expired_message(self.drain.grace))
                # Cancelled by gRPC: the client went away, or its deadline passed.
                remaining = inbound.context.remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            finally:
                inbound.status = code.name
                span = inbound.span
                if span is not None:
                    inbound.span_attributes["rpc.grpc.status_code"] = code.value[0]
                    if code in _SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, code.name))
                if self.access.enabled:
                    trace = None if span is None else tracing_ids.log_ids(span)
                    peer = grpc_metadata.peer_address(context.peer())
                    self.access.log(peer, "ModelInfer", inbound.model, code.name, size,
                                    time.perf_counter() - started, inbound.context.request_id,
                                    trace)  # fmt: skip


def _enveloped(
    envelope: Envelope,
    drain: Drain,
    model_infer: Callable[[bytes, _Call], Awaitable[bytes]],
    access: GrpcAccessLogger,
) -> Behavior:
    """ModelInfer inside the request envelope both doors share."""

    async def call(data: bytes, context: Context) -> bytes:
        return await _Call(envelope, drain, context, access).run(model_infer, data)

    return call


def _span_start(context: Context, headers: Headers) -> SpanStart:
    attributes: dict[str, AttributeValue] = {
        "rpc.system": "grpc",
        "rpc.service": SERVICE.full_name,
        "rpc.method": "ModelInfer",
        "client.address": grpc_metadata.peer_address(context.peer()),
    }
    return SpanStart(f"{SERVICE.full_name}/ModelInfer", headers, attributes)


def _encode(result: Any) -> bytes:
    """A model's answer as a serialized ModelInferResponse."""
    if isinstance(result, PassthroughResponse):
        return result.body
    if isinstance(result, dict):  # the v2 JSON form
        result = InferResponse.from_rest(result)
    if isinstance(result, InferResponse):
        return result.to_grpc_bytes()
    descriptor = getattr(result, "DESCRIPTOR", None)
    if getattr(descriptor, "full_name", None) == "inference.ModelInferResponse":
        # A message built by the model: ours, or tritonclient's / kserve's (same wire form).
        data: bytes = result.SerializeToString()
        return data
    raise InferenceError(f"the model returned a {type(result).__name__}, not a v2 response")
