"""The gateway's spans: the SDK's, made for a fraction of its cost per span.

A traced pass-through request makes a SERVER span and a CLIENT span per attempt. The SDK's
span checks each attribute through a recursive cleaner under a lock, makes its bounded lists
of events and links up front, and copies itself into a `ReadableSpan` when it ends: on a busy
core ~60 us a span, about what the rest of the request costs. `LeanTracer` makes spans that
are `ReadableSpan`s themselves and end as themselves (ended, they take no change, so there is
nothing to copy): attribute values of the plain kinds (str, bool, int, float) are kept as
given, others cleaned as the SDK cleans them; events and links are bounded as the SDK bounds
them, their lists made with the first one. Sampler, id generator, resource, limits and span
processors are those of the SDK tracer it is built from: what the exporters get is the same.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

__all__ = ["HashedResource", "LeanSpan", "LeanTracer"]

logger = logging.getLogger("gateway.tracing")

_PLAIN = frozenset({str, bool, int, float})
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class LeanTracer(trace_api.Tracer):
    """Spans for the SDK tracer `sdk`'s provider, as it would make them, made leaner."""

    def __init__(self, sdk: SdkTracer, scope: InstrumentationScope) -> None:
        self.sdk = sdk
        self.sampler = sdk.sampler
        self.id_generator = sdk.id_generator
        self.resource = sdk.resource
        self.processor: SpanProcessor = sdk.span_processor
        self.scope = scope
        self.limits = SpanLimits()  # from the environment, as the provider's

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            random = self.id_generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        links = links or ()
        # The sampler decides before anything else is made.
        sampled = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        decision: Any = sampled.decision  # (its methods are untyped)
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
        if random:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=sampled.trace_state,
        )
        if not decision.is_recording():
            return trace_api.NonRecordingSpan(span_context)
        span = LeanSpan(self, name, span_context, parent, kind, record_exception,
                        set_status_on_exception)  # fmt: skip
        if sampled.attributes:
            span.set_attributes(sampled.attributes)
        for link in links:
            span.add_link(link.context, link.attributes)
        span.start(start_time, context)
        return span

    @contextmanager  # a context manager as the API's (its decorator is private)
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace_api.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time,
                               record_exception, set_status_on_exception)  # fmt: skip
        with trace_api.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class LeanSpan(trace_api.Span, ReadableSpan):
    """A recording span that its processors get as it is when it ends."""

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self._attributes: dict[str, types.AnyValue]
        ReadableSpan.__init__(
            self,
            name=name,
            context=context,
            parent=parent,
            resource=tracer.resource,
            attributes={},
            events=(),
            links=(),
            kind=kind,
            status=_UNSET,
            instrumentation_scope=tracer.scope,
        )
        self._tracer = tracer
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._dropped = 0  # attributes dropped past the limit

    def start(self, start_time: int | None, parent_context: context_api.Context | None) -> None:
        self._start_time = start_time if start_time is not None else time_ns()
        processor: Any = self._tracer.processor  # (typed for the SDK's own span class)
        processor.on_start(self, parent_context=parent_context)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        if self._dropped:
            # The SDK's form, which says how many were dropped.
            bounded = BoundedAttributes(None, self._attributes, immutable=True)
            bounded.maxlen = self._tracer.limits.max_span_attributes
            bounded.dropped = self._dropped
            self._attributes = bounded  # type: ignore[assignment]
        self._tracer.processor.on_end(self)

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        kept = self._attributes
        limits = self._tracer.limits
        room = limits.max_span_attributes
        room = len(attributes) + 1 if room is None else room - len(kept)
        if limits.max_span_attribute_length is None and len(attributes) < room:
            # The usual case, a few plain new values with room for them: taken as given.
            for key, value in attributes.items():
                if type(key) is str and key and type(value) in _PLAIN and key not in kept:
                    kept[key] = value
                else:
                    self._set(key, value)
            return
        for key, value in attributes.items():
            self._set(key, value)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        self._set(key, value)

    def _set(self, key: str, value: types.AnyValue) -> None:
        limits = self._tracer.limits
        longest = limits.max_span_attribute_length
        plain = type(key) is str and key and type(value) in _PLAIN
        if not plain or (longest is not None and type(value) is str and len(value) > longest):
            # The SDK's checks: a bad key dropped, a value cleaned (with its warnings).
            cleaned = BoundedAttributes(None, {key: value}, max_value_len=longest)
            if not cleaned:
                self._dropped += 1
                return
            ((key, value),) = cleaned.items()
        attributes = self._attributes
        if key in attributes:
            del attributes[key]  # the newest value goes last, as the SDK keeps them
        most = limits.max_span_attributes
        if most is not None and len(attributes) >= most:
            if most == 0:
                self._dropped += 1
                return
            del attributes[next(iter(attributes))]
            self._dropped += 1
        attributes[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            logger.warning("Tried calling add_event on an ended span.")
            return
        limits = self._tracer.limits
        bounded = BoundedAttributes(limits.max_event_attributes, attributes,
                                    max_value_len=limits.max_attribute_length)  # fmt: skip
        if not isinstance(self._events, BoundedList):
            self._events = BoundedList(limits.max_events)
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None:
            logger.warning("Tried calling add_link on an ended span.")
            return
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._tracer.limits
        bounded = BoundedAttributes(limits.max_link_attributes, attributes,
                                    max_value_len=limits.max_attribute_length)  # fmt: skip
        if not isinstance(self._links, BoundedList):
            self._links = BoundedList(limits.max_links)
        self._links.append(Link(context, bounded))

    def update_name(self, name: str) -> None:
        if self._end_time is not None:
            logger.warning("Tried calling update_name on an ended span.")
            return
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Tried calling set_status on an ended span.")
            return
        # As the SDK: OK is final; UNSET changes nothing.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        named = (
            f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__
        )
        recorded: dict[str, types.AnyValue] = {
            "exception.type": named,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                description = f"{type(exc_val).__name__}: {exc_val}"
                self.set_status(Status(StatusCode.ERROR, description))
        super().__exit__(exc_type, exc_val, exc_tb)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'


class HashedResource(Resource):
    """`resource`, its hash computed once: the OTLP encoder groups spans by resource, hashing
    each span's, and a resource's hash is a JSON dump of its attributes (~10 us a span)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource.attributes, resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash
