"""What the gateway knows about the request being served, for code deep in the call.

The servers open a `RequestContext` per request; `Model.__call__` records stage durations in
it and hops read its deadline and record their own timings, without any of that passing
through the user's `preprocess` / `predict` / `postprocess` signatures (which are KServe's).
With a tracer on the context, each stage is also a span.
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_current: ContextVar[RequestContext | None] = ContextVar("gateway_request", default=None)


@dataclass
class RequestContext:
    """One inbound request: its id, protocol, deadline and where its time went."""

    request_id: str
    protocol: str
    # time.monotonic() by which the client needs an answer; None when it set no deadline.
    deadline: float | None = None
    # (stage, seconds), in the order stages finished: "preprocess", "predict", hop names...
    timings: list[tuple[str, float]] = field(default_factory=list)
    # Server-Timing entries an upstream gateway reported, merged into ours.
    upstream_timings: list[str] = field(default_factory=list)
    # The server's tracer, for stage spans; None when tracing is off.
    tracer: Tracer | None = None
    # The request's SERVER span, while and after it is served; None when tracing is off.
    span: Span | None = None
    # The Server-Timing entry naming the server that serves it (None: its answers do not say).
    identity: str | None = None
    # time.monotonic() when it arrived (its head; the body may have come long after).
    arrived: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def record(self, stage: str, seconds: float) -> None:
        self.timings.append((stage, seconds))

    def stage_seconds(self, stage: str) -> float:
        total = 0.0  # a loop, not sum() of a generator: asked four times a request
        for name, seconds in self.timings:
            if name == stage:
                total += seconds
        return total


def current() -> RequestContext | None:
    """The context of the request being served, or None outside a server."""
    return _current.get()


class serving:
    """Make `context` current for the code inside the block (and the tasks it starts).

    A class rather than a generator: it runs on every request, and a generator-based
    context manager costs several times as much."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: RequestContext) -> None:
        self._context = context

    def __enter__(self) -> RequestContext:
        self._token = _current.set(self._context)
        return self._context

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


class stage:
    """Time the block as stage `name` of the current request (if any), and trace it as an
    INTERNAL span when the request has a tracer and `traced` (a stage running user code: a
    default stage that only forwards has its hop's CLIENT span, and a span around it would
    say nothing more)."""

    __slots__ = ("_context", "_name", "_span", "_start", "_traced")

    def __init__(self, name: str, traced: bool = True) -> None:
        self._name = name
        self._traced = traced

    def __enter__(self) -> None:
        self._context = context = _current.get()
        self._span: contextlib.AbstractContextManager[object] | None = None
        if self._traced and context is not None and context.tracer is not None:
            self._span = context.tracer.start_as_current_span(self._name)
            self._span.__enter__()
        self._start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self._start
        try:
            if self._span is not None:
                self._span.__exit__(*exc)
        finally:
            if self._context is not None:
                self._context.record(self._name, seconds)
