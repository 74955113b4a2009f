"""Finished spans to OTLP protobuf bytes (an ``ExportTraceServiceRequest``), written directly.

The SDK's OTLP encoder builds a protobuf object for every span, attribute and value before
serializing: 50-100 us a span on this machine, in the exporter's thread but holding the GIL the
event loop needs. This one writes the wire format from the span's fields (the SDK's bytes, byte
for byte: a test compares them), keeps the bytes of short attributes for the next span that
carries the same one, and hands any batch it does not expect
(a value of a kind OpenTelemetry does not allow, an integer beyond 64 bits) to the SDK's.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

__all__ = ["Encoded", "encode", "encode_request"]

# Span.flags: the parent's "is remote" is known (always), and whether it is.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64 = range(-(2**63), 2**63)
# Attributes remembered as bytes; past this many the memory starts again (request ids and
# URLs differ per request: only the repeated ones are worth keeping).
_MEMO_SIZE = 4096
_MEMO_CHARS = 128
_NUMBERS = frozenset({bool, int, float})
_memo: dict[tuple[int, str, type, Any], bytes] = {}
_statuses: dict[tuple[StatusCode, str | None], bytes] = {}
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack


class _Unexpected(Exception):
    """A span this encoder leaves to the SDK's (which logs and drops what it cannot encode)."""


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """`spans` as a serialized ``ExportTraceServiceRequest``, grouped by resource, then by
    instrumentation scope, in the order they come (as the SDK groups them)."""
    try:
        return _encode(spans)
    except _Unexpected:
        return bytes(sdk_encode(spans).SerializePartialToString())


def encode_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """`encode`, parsed back into the message the gRPC exporter sends (parsing is native)."""
    return ExportTraceServiceRequest.FromString(encode(spans))


class Encoded:
    """`spans` encoded, in the form the SDK's OTLP/HTTP exporter takes from its encoder."""

    __slots__ = ("_data",)

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self._data = encode(spans)

    def SerializePartialToString(self) -> bytes:  # protobuf's name
        return self._data

    SerializeToString = SerializePartialToString


def _encode(spans: Sequence[ReadableSpan]) -> bytes:
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        scopes = grouped.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(_span(span))
    out = []
    for resource, scopes in grouped.items():
        parts = [_field(1, _attributes(resource.attributes, 1))]  # Resource
        for scope, encoded in scopes.items():
            scope_spans = [_field(1, _scope(scope)), *(_field(2, span) for span in encoded)]
            if scope is not None and scope.schema_url:
                scope_spans.append(_field(3, scope.schema_url.encode()))
            parts.append(_field(2, b"".join(scope_spans)))  # ScopeSpans
        if resource.schema_url:
            parts.append(_field(3, resource.schema_url.encode()))
        out.append(_field(1, b"".join(parts)))  # ResourceSpans
    return b"".join(out)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    if context is None:
        raise _Unexpected
    parent = span.parent
    parts = [
        b"\x0a\x10",  # 1: trace_id, 16 bytes
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",  # 2: span_id, 8 bytes
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
        parts.append(_field(3, state.encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))  # 4: parent_span_id
    # Proto3 leaves out a field that holds its default (outside a oneof): so do we.
    if span.name:
        parts.append(_field(5, span.name.encode()))
    parts.append(_KINDS[span.kind])  # 6
    if span.start_time:
        parts += (b"\x39", _fixed64(span.start_time))  # 7: start_time_unix_nano
    if span.end_time:
        parts += (b"\x41", _fixed64(span.end_time))  # 8: end_time_unix_nano
    if span.attributes:
        parts.append(_attributes(span.attributes, 9))
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    for event in span.events or ():
        event_parts = [b"\x09", _fixed64(event.timestamp)] if event.timestamp else []
        if event.name:
            event_parts.append(_field(2, event.name.encode()))
        if event.attributes:
            event_parts.append(_attributes(event.attributes, 3))
        if event.dropped_attributes:
            event_parts += (b"\x20", _varint(event.dropped_attributes))
        parts.append(_field(11, b"".join(event_parts)))
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    for link in span.links or ():
        parts.append(_field(13, _link(link.context, link.attributes, link.dropped_attributes)))
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    parts += (_status(span.status), _REMOTE if parent is not None and parent.is_remote else _LOCAL)
    return b"".join(parts)


def _status(status: Status) -> bytes:
    """Field 15 (always written, as the SDK writes it, if only empty)."""
    key = (status.status_code, status.description)
    encoded = _statuses.get(key)
    if encoded is None:
        parts = []
        if status.description:
            parts.append(_field(2, status.description.encode()))
        if status.status_code.value:
            parts += (b"\x18", _varint(status.status_code.value))
        encoded = _field(15, b"".join(parts))
        if len(_statuses) < _MEMO_SIZE and _short(status.description):
            _statuses[key] = encoded
    return encoded


def _link(context: SpanContext, attributes: Mapping[str, Any] | None, dropped: int) -> bytes:
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if attributes:
        parts.append(_attributes(attributes, 4))
    if dropped:
        parts += (b"\x28", _varint(dropped))
    flags = _HAS_IS_REMOTE | _IS_REMOTE if context.is_remote else _HAS_IS_REMOTE
    parts += (b"\x35", _fixed32(flags))  # 6: flags
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_field(1, scope.name.encode()))
    if scope.version:
        parts.append(_field(2, scope.version.encode()))
    if scope.attributes:
        parts.append(_attributes(scope.attributes, 3))
    return b"".join(parts)


def _attributes(attributes: Mapping[str, Any], number: int) -> bytes:
    """Each attribute as a KeyValue in field `number` of the message holding them."""
    parts = []
    for key, value in attributes.items():
        kind = value.__class__
        # Only short plain values are remembered: an exception's message or stack trace
        # seldom repeats, and would make the memory large.
        short = (kind is str and len(value) <= _MEMO_CHARS) or kind in _NUMBERS
        memo_key = (number, key, kind, value) if short else None
        framed = None if memo_key is None else _memo.get(memo_key)
        if framed is None:
            framed = _field(number, _key_value(key, value))
            if memo_key is not None:
                if len(_memo) >= _MEMO_SIZE:
                    _memo.clear()
                _memo[memo_key] = framed
        parts.append(framed)
    return b"".join(parts)


def _short(value: Any) -> bool:
    return not isinstance(value, str) or len(value) <= _MEMO_CHARS


def _key_value(key: str, value: Any) -> bytes:
    return (_field(1, key.encode()) if key else b"") + _field(2, _any_value(value))


def _any_value(value: Any) -> bytes:
    """An AnyValue; its one field is written even when it holds the default (a oneof)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise _Unexpected
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = (_field(1, _key_value(str(key), item)) for key, item in value.items())
        return _field(6, b"".join(pairs))
    raise _Unexpected


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (bytes, string, message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]
# Field 6, kind: the SDK's SpanKind counts from INTERNAL = 0, OTLP's from 1.
_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}
_LOCAL = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE)  # 16: flags
_REMOTE = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
