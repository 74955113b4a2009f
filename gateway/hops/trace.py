"""`Traced`: one CLIENT span, one ``hop_seconds`` observation and one timing per attempt.

It sits inside `Retrying` (``Retrying(Traced(transport))``), so each attempt is a span of its
own, numbered as `Retrying` hands it over (`Hop.attempt`); a call not retried is attempt 1.
The span's context is injected into a copy of the headers, which the transports send as HTTP
headers or gRPC metadata, so the upstream's SERVER span is the child of this attempt.
``ready`` is a health probe: it is neither traced nor timed.

With tracing off (no tracer) the metric and the timing are still recorded; no span is made
and the headers are passed on as they are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from gateway import request_context, tracing, tracing_ids
from gateway.errors import UpstreamStatusError
from gateway.hops.base import Headers, Hop, HopWrapper, Metadata
from gateway.hops.pool import PoolTargetError
from gateway.hops.replicas import ReplicaNamed, pool_target
from gateway.hops.settings import HopSettings
from gateway.metrics import Metrics
from gateway.metrics_tally import Tally
from gateway.passthrough import Passthrough, PassthroughResponse

__all__ = ["Traced"]

Call = Callable[[Any, Headers], Awaitable[Any]]

GRPC_SERVICE = "inference.GRPCInferenceService"
_GRPC_METHODS = {"infer": "ModelInfer", "model_metadata": "ModelMetadata"}


class Traced(HopWrapper):
    """Traces, times and counts each call to the inner hop.

    `settings` name the upstream (model, address); `metrics` gets ``hop_seconds``; `tracer`
    None turns the spans off.
    """

    def __init__(
        self,
        inner: Hop,
        *,
        settings: HopSettings | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        super().__init__(inner)
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.model_name = settings.model_name if settings is not None else ""
        self.stage = f"hop.{self.name}"
        self.span_name = f"hop {self.name}"
        # Per protocol spoken (an "auto" hop's is learned): what every span says, computed once.
        self._by_protocol: dict[str, _Attributes] = {}
        # (protocol, outcome) -> the tally of this hop's hop_seconds child: `labels()` locks
        # and hashes on every call.
        self._histograms: dict[tuple[str, str], Tally] = {}

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.attempt("infer", payload, headers, 1)

    async def explain(self, payload: Any, headers: Headers) -> Any:
        return await self.attempt("explain", payload, headers, 1)

    async def model_metadata(
        self, model_name: str, headers: Headers, version: str | None = None
    ) -> Metadata | None:
        metadata: Metadata | None = await self.attempt(
            "model_metadata", (model_name, version), headers, 1
        )
        return metadata

    async def attempt(self, verb: str, payload: Any, headers: Headers, number: int) -> Any:
        if verb == "model_metadata":  # no inference: not timed as one
            # Traced only inside a traced request: like the doors' metadata endpoints, a
            # metadata call of its own (a client's GET, say) starts no trace.
            if self.tracer is None or not get_current_span().get_span_context().is_valid:
                return await self._metadata(payload, headers)
            return await self._traced(verb, self._metadata, payload, headers, number)
        started = time.perf_counter()
        outcome = "ok"
        # The attempt's number ends here: the hop inside is called as for any one call.
        call: Call = self.inner.explain if verb == "explain" else self.inner.infer
        try:
            if self.tracer is None:
                return await call(payload, headers)
            return await self._traced(verb, call, payload, headers, number)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._observe(outcome, time.perf_counter() - started)

    async def _metadata(self, payload: tuple[str, str | None], headers: Headers) -> Any:
        return await self.inner.model_metadata(payload[0], headers, payload[1])

    async def _traced(
        self, verb: str, call: Call, payload: Any, headers: Headers, number: int
    ) -> Any:
        assert self.tracer is not None
        # The sampler decides first; a span it drops costs no attributes, and a kept one
        # gets them all at once when the attempt ends. Started and made current by hand:
        # the SDK's start_as_current_span is two generator-based context managers.
        span = self.tracer.start_span(self.span_name, kind=SpanKind.CLIENT)
        token = otel_context.attach(set_span_in_context(span))
        try:
            # A copy: the caller's dict is shared by every attempt and must keep the
            # inbound context, not this attempt's.
            outbound = dict(headers)
            tracing.inject(outbound)
            with ReplicaNamed() as replica:
                try:
                    response = await call(payload, outbound)
                except BaseException as exc:
                    if span.is_recording():
                        static = self._attributes(self.protocol)
                        attributes = _attempt(static, verb, number, payload, replica)
                        _failed(span, attributes, exc, static.grpc)
                    raise
            if span.is_recording():
                static = self._attributes(self.protocol)
                attributes = _attempt(static, verb, number, payload, replica)
                attributes.update(static.ok)
                size = _size(response)
                if size is not None:
                    attributes[_size_key(static.grpc, "response")] = size
                span.set_attributes(attributes)
            return response
        finally:
            otel_context.detach(token)
            span.end()

    def _observe(self, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            protocol = self.protocol
            histogram = self._histograms.get((protocol, outcome))
            if histogram is None:
                histogram = self.metrics.tallies.of(
                    self.metrics.hop_seconds.labels(self.model_name, self.name, protocol, outcome)
                )
                self._histograms[protocol, outcome] = histogram
            histogram.observe(seconds, None if self.tracer is None else tracing_ids.exemplar())
        context = request_context.current()
        if context is not None:
            context.record(self.stage, seconds)

    def _attributes(self, protocol: str) -> _Attributes:
        """What every attempt's span on `protocol` says about the upstream, computed once."""
        known = self._by_protocol.get(protocol)
        if known is None:
            known = self._by_protocol[protocol] = _attributes(
                self.name, protocol, self.model_name, self.settings
            )
        return known


def _attempt(
    static: _Attributes, verb: str, number: int, payload: Any, replica: ReplicaNamed
) -> dict[str, AttributeValue]:
    """What one attempt's span says: the replica it went to, the upstream's (an upstream
    of one address names it as configured), then the call's own."""
    attributes = replica.attributes()
    attributes.update(static.common)
    attributes["gateway.hop.verb"] = verb
    attributes["gateway.hop.attempt"] = number
    if static.grpc:
        attributes["rpc.method"] = _GRPC_METHODS.get(verb, verb)
    else:
        attributes["http.request.method"] = "GET" if verb == "model_metadata" else "POST"
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
    size = _size(payload)
    if size is not None:
        attributes[_size_key(static.grpc, "request")] = size
    return attributes


def _failed(
    span: Span, attributes: dict[str, AttributeValue], exc: BaseException, grpc_call: bool
) -> None:
    if isinstance(exc, UpstreamStatusError):
        if grpc_call:
            attributes["rpc.grpc.status_code"] = exc.code.value[0]
            attributes["gateway.hop.status"] = exc.code.name
        else:
            attributes["http.response.status_code"] = exc.status
            attributes["gateway.hop.status"] = str(exc.status)
    attributes["error.type"] = type(exc).__name__
    span.set_attributes(attributes)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@dataclass(frozen=True)
class _Attributes:
    grpc: bool
    common: dict[str, AttributeValue]
    ok: dict[str, AttributeValue]


def _attributes(
    name: str, protocol: str, model_name: str, settings: HopSettings | None
) -> _Attributes:
    grpc_call = protocol == "grpc-v2"
    common: dict[str, AttributeValue] = {"gateway.hop": name, "gateway.hop.protocol": protocol}
    if model_name:
        common["gateway.model_name"] = model_name
    if grpc_call:
        common["rpc.system"] = "grpc"
        common["rpc.service"] = GRPC_SERVICE
    address = None if settings is None else _address(settings)
    if address is not None:
        common["server.address"], common["server.port"] = address
    if grpc_call:
        code = grpc.StatusCode.OK
        ok: dict[str, AttributeValue] = {
            "rpc.grpc.status_code": code.value[0],
            "gateway.hop.status": code.name,
        }
    else:
        # The transports raise on anything but a success, which they answer 200 for.
        ok = {"http.response.status_code": 200, "gateway.hop.status": "200"}
    return _Attributes(grpc_call, common, ok)


def _size_key(grpc_call: bool, direction: str) -> str:
    # HTTP has semantic names for body sizes; gRPC has none, so ours follow their shape.
    return f"{'rpc' if grpc_call else 'http'}.{direction}.body.size"


def _address(settings: HopSettings) -> tuple[str, int | None] | None:
    """The upstream's host and port, as `server.address` / `server.port` want them; None
    for a pool of several entries (the transport names each attempt's replica)."""
    try:
        entries = pool_target(settings).entries
    except PoolTargetError:
        return None
    if len(entries) != 1:
        return None
    return entries[0].host, entries[0].port


def _size(message: Any) -> int | None:
    """The body size of a message whose bytes we hold; None for decoded ones (their wire
    size is only known to the transport)."""
    if isinstance(message, Passthrough | PassthroughResponse):
        return len(message.body)
    if isinstance(message, bytes | bytearray | memoryview):
        return len(message)
    return None
