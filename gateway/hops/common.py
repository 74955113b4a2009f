"""What the REST and gRPC transports share: the call's timeout under the inbound deadline,
merging an upstream's Server-Timing, Retry-After, and the errors of payloads and answers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import orjson

from gateway import request_context, timing_entries
from gateway.errors import (
    GatewayError,
    InferenceError,
    InvalidInput,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.header_rules import valid_http_value
from gateway.hops.settings import HopSettings
from gateway.sanitize import upstream_text

__all__ = [
    "READY_TIMEOUT",
    "call_timeout",
    "decoded",
    "json_body",
    "merge_server_timing",
    "not_found",
    "retry_after",
    "unsupported_payload",
]

T = TypeVar("T")

# A probe that hangs is a failed probe (Kubernetes gives up on one after 1 s by default).
READY_TIMEOUT = 5.0


def call_timeout(settings: HopSettings, cap: float | None = None) -> float:
    """Seconds a call may take: the hop's timeout (and `cap`), cut to what is left of the
    inbound request's deadline. Once that has passed, raises UpstreamTimeout: no call."""
    timeout = settings.timeout if cap is None else min(settings.timeout, cap)
    context = request_context.current()
    remaining = None if context is None else context.remaining()
    if remaining is not None:
        if remaining <= 0:
            raise UpstreamTimeout(
                f"the request's deadline passed before the call to the {settings.role}",
                upstream=settings.role,
            )
        timeout = min(timeout, remaining)
    return timeout


# What the upstreams of one request may add to its Server-Timing header, so that the header
# stays one clients read (many cap a header line at 8 KiB): the gateway's own entries always
# go out, the upstreams' up to these bounds (the rest is dropped).
MAX_UPSTREAM_TIMINGS = 32
MAX_UPSTREAM_TIMING_BYTES = 4096
_MAX_ENTRY = 256


def merge_server_timing(values: Iterable[str], role: str) -> None:
    """Add an upstream's Server-Timing entries to the current request's, each named after
    the gateway the upstream says it is, or else after `role` (``predict;dur=3`` from a
    predictor becomes ``predictor.predict;dur=3``; see `gateway.timing_entries`); what is
    not a valid header value, or past the bounds above, is dropped."""
    context = request_context.current()
    if context is None:
        return
    entries = timing_entries.split(values)
    if not entries:
        return
    timings = context.upstream_timings
    used = sum(len(entry) + 2 for entry in timings) if timings else 0
    for named in timing_entries.prefixed(entries, role):
        if len(timings) >= MAX_UPSTREAM_TIMINGS:
            return
        if len(named) > _MAX_ENTRY or used + len(named) + 2 > MAX_UPSTREAM_TIMING_BYTES:
            continue
        if named.isascii() and valid_http_value(named):
            timings.append(named)
            used += len(named) + 2


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (seconds or an HTTP date); None if unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def json_body(payload: Any) -> bytes:
    """A JSON request body, numpy arrays included."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise InferenceError(f"the request cannot be encoded as JSON: {exc}") from exc


def not_found(
    exc: UpstreamStatusError, role: str, where: str, protocol: str
) -> UpstreamStatusError:
    """An upstream's "not found" on the inference path, saying what was called and what to
    check: the model's name there, and the protocol the gateway speaks to it (a v1 URL on a
    v2-only server is a 404 too)."""
    return UpstreamStatusError(
        f"the {role} answered {exc.status} to {where}: {exc.reason} (does it serve the model "
        f"under that name, and speak {protocol}? --{role}_protocol sets what the gateway "
        "speaks to it)",
        status=exc.status,
        code=exc.code,
        upstream=role,
        retry_after=exc.retry_after,
    )


def decoded(role: str, decode: Callable[[], T]) -> T:
    """`decode()`, its failure being the upstream's answer's fault, not the client's."""
    try:
        return decode()
    except (GatewayError, ValueError, TypeError) as exc:
        raise UpstreamProtocolError(
            f"the {role}'s answer cannot be read: {upstream_text(str(exc))}", upstream=role
        ) from exc


# What the v1 server hands a model besides a dict: other JSON values, or a body that is not
# JSON. Forwarded unchanged, they are the client's request: the client's error.
_JSON_NAMES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
_NOT_AN_OBJECT = "the predictor takes a JSON object (with v1 'instances' or v2 'inputs')"


def unsupported_payload(payload: Any) -> GatewayError:
    """The error for a payload no hop takes (a transport takes no dict either: `Shaping`
    turns dicts into what it takes)."""
    if isinstance(payload, dict):
        return InferenceError(
            "a transport takes an InferRequest or a Passthrough; a dict needs "
            "gateway.hops.shaping.Shaping around it"
        )
    if isinstance(payload, bytes | bytearray):
        return InvalidInput(f"{_NOT_AN_OBJECT}; this body is not JSON")
    if payload is None or type(payload) in _JSON_NAMES:
        return InvalidInput(f"{_NOT_AN_OBJECT}, not {_JSON_NAMES.get(type(payload), 'null')}")
    return InferenceError(
        f"a hop takes an InferRequest, a dict or a Passthrough, not a {type(payload).__name__}"
    )
