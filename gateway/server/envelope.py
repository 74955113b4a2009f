"""What every inbound request gets, whichever door it came in by.

`Envelope` (one per server) gives each request its `RequestContext` (request id, deadline,
stage timings) and the headers every answer carries back (`answer_headers`). An inference
request also gets an `Inbound`: the in-flight gauge, the request metrics (model, protocol,
status, seconds) and, given a tracer, the SERVER span that continues the caller's trace;
inside it, `Inbound.admitted()` counts the request against the concurrency limit and makes its
context current for the model and its hops.

The doors only translate: HTTP headers or gRPC metadata in, their own status words out (an
HTTP status, a gRPC code), the answer headers as response headers or trailers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from gateway import request_context, tracing, tracing_ids
from gateway.dataplane import DataPlane
from gateway.header_rules import REQUEST_ID, SERVER_TIMING, TRACERESPONSE, usable_request_id
from gateway.metrics import Metrics
from gateway.request_context import RequestContext
from gateway.server.server_timing import server_timing
from gateway.timing_entries import identity_entry

__all__ = ["Envelope", "Inbound", "SpanStart", "answer_headers", "request_id"]


def request_id(headers: Mapping[str, str]) -> str:
    """The client's ``x-request-id``, or a new one when it sent none or one that cannot be
    ours: over 256 characters, or not printable ASCII (a line separator would forge log
    lines), or named in ``Connection`` (hop-by-hop: not for us to pass on)."""
    given = headers.get(REQUEST_ID)
    if given and usable_request_id(given) and not _named_in_connection(headers, REQUEST_ID):
        return given
    return os.urandom(16).hex()


def _named_in_connection(headers: Mapping[str, str], name: str) -> bool:
    connection = headers.get("connection")
    return connection is not None and name in (n.strip().lower() for n in connection.split(","))


@dataclass(frozen=True)
class SpanStart:
    """How a door names an inbound request's SERVER span, and where the caller's trace
    context is (its headers or metadata)."""

    name: str
    carrier: Mapping[str, str]
    attributes: dict[str, AttributeValue] | None = None


class Envelope:
    """What the doors of one server share: its data plane, metrics and tracer, and the
    `Server-Timing` entry naming it (`service_name`; None: the answers do not say)."""

    __slots__ = ("dataplane", "identity", "metrics", "tracer")

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        tracer: Tracer | None,
        service_name: str | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.tracer = tracer
        self.identity = None if service_name is None else identity_entry(service_name)

    def context(self, protocol: str, request_id: str, deadline: float | None) -> RequestContext:
        """The context of one request: its id, its protocol, when its answer is due."""
        return RequestContext(request_id, protocol, deadline, tracer=self.tracer,
                              identity=self.identity)  # fmt: skip

    def inbound(self, context: RequestContext, span: SpanStart | None, status: str) -> Inbound:
        """An inference request in `context`, to run inside ``with``. `span` is only read
        with a tracer (build it only then); `status` is what the metrics record if the door
        sets none (the client went away before an answer)."""
        return Inbound(self, context, span, status)


def answer_headers(context: RequestContext) -> tuple[tuple[str, str], ...]:
    """What every answer carries back: the request id, where its time went, and (sampled)
    the trace it was recorded under."""
    answer: tuple[tuple[str, str], ...] = ((REQUEST_ID, context.request_id),)
    timing = server_timing(context, context.identity)
    if timing is not None:
        answer += ((SERVER_TIMING, timing),)
    if context.span is not None:
        trace = tracing_ids.traceresponse(context.span)
        if trace is not None:
            answer += ((TRACERESPONSE, trace),)
    return answer


class Inbound:
    """One inference request from arrival to answer: counted in flight, measured, traced.

    The door sets `model` (the name asked for: a metrics label once known to be registered)
    and `status` (its word for the outcome), and may add to `span_attributes` (set on the
    SERVER span when it ends) and set the status of `span` (None without tracing).
    """

    __slots__ = ("_envelope", "_span_cm", "_span_start", "_started", "context", "model", "span",
                 "span_attributes", "status")  # fmt: skip

    def __init__(
        self, envelope: Envelope, context: RequestContext, span: SpanStart | None, status: str
    ) -> None:
        self._envelope = envelope
        self._span_start = span
        self._span_cm: AbstractContextManager[Span] | None = None
        self._started = 0.0
        self.context = context
        self.model = ""
        self.status = status
        self.span: Span | None = None
        self.span_attributes: dict[str, AttributeValue] = {}

    def __enter__(self) -> Inbound:
        envelope = self._envelope
        start = self._span_start
        if envelope.tracer is not None and start is not None:
            span_cm = tracing.server_span(
                envelope.tracer, start.name, start.carrier, start.attributes, self.context
            )
            self.span_attributes = span_cm.attributes
            self.span = span_cm.__enter__()
            self._span_cm = span_cm
        envelope.metrics.in_flight.inc()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self._started
        envelope = self._envelope
        try:
            envelope.metrics.in_flight.dec()
            envelope.metrics.observe(self._label(), self.context, self.status, seconds)
        finally:
            if self._span_cm is not None:
                self._span_cm.__exit__(*exc)

    def admitted(self) -> _Admitted:
        """Count the request against the concurrency limit (refused at once past it) and
        make its context current, for the block."""
        return _Admitted(self._envelope.dataplane, self.context)

    def _label(self) -> str:
        # Only registered names become labels: made-up names would each add a series.
        name = self.model
        if name and self._envelope.dataplane.repository.get_model(name) is not None:
            return name
        return ""


class _Admitted:
    """`Inbound.admitted` (a class, not a generator: it runs per request)."""

    __slots__ = ("_admission", "_serving")

    def __init__(self, dataplane: DataPlane, context: RequestContext) -> None:
        self._admission = dataplane.admitted()
        self._serving = request_context.serving(context)

    def __enter__(self) -> None:
        self._admission.__enter__()
        self._serving.__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            self._serving.__exit__(*exc)
        finally:
            self._admission.__exit__(*exc)
