"""Recent spans, for a latency view of the traces this process took part in
(``--trace_buffer``: ``/traces``, ``gateway trace``). An SDK span processor, so imported only
when a buffer is asked for (`gateway.tracing.recent_spans`)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

__all__ = ["SPANS_PER_TRACE", "RecentSpans"]


class RecentSpans(SpanProcessor):
    """Keeps the last `capacity` finished spans, grouped by trace (oldest trace first), and
    at most `max_traces` traces when given.

    When full, the oldest trace gives up its oldest span (or, past `max_traces`, all of its
    spans): the memory stays bounded however many spans one trace has.
    """

    def __init__(self, capacity: int = 2048, max_traces: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be 1 or more, not {capacity}")
        if max_traces is not None and max_traces < 1:
            raise ValueError(f"max_traces must be 1 or more, not {max_traces}")
        self.capacity = capacity
        self.max_traces = max_traces
        self._size = 0
        # Insertion order is the order traces were first seen: the first one is the oldest.
        self._traces: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        # Spans end on the event loop and in executor threads alike.
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        with self._lock:
            self._traces.setdefault(context.trace_id, []).append(span)
            self._size += 1
            if self.max_traces is not None and len(self._traces) > self.max_traces:
                _, dropped = self._traces.popitem(last=False)
                self._size -= len(dropped)
            if self._size > self.capacity:
                oldest = next(iter(self._traces))
                spans = self._traces[oldest]
                # A trace's spans were added in order, so its first one is the oldest.
                del spans[0]
                self._size -= 1
                if not spans:
                    del self._traces[oldest]

    def traces(self) -> dict[int, list[ReadableSpan]]:
        """trace id -> its spans still kept, in the order they ended."""
        with self._lock:
            return {trace_id: list(spans) for trace_id, spans in self._traces.items()}

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        with self._lock:
            return list(self._traces.get(trace_id, ()))

    def clear(self) -> None:
        with self._lock:
            self._size = 0
            self._traces.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# Spans kept per trace: a chained request leaves about six in each gateway; retries add more.
SPANS_PER_TRACE = 32
