"""The ``Server-Timing`` header: where a request's time went, per stage and per upstream."""

from __future__ import annotations

from gateway.request_context import RequestContext

HEADER = "Server-Timing"


def server_timing(context: RequestContext) -> str | None:
    """``preprocess;dur=0.123, predict;dur=4.5`` (milliseconds), then the upstreams' entries
    as they reported them; None when there is nothing to report."""
    entries = [f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in context.timings]
    entries.extend(context.upstream_timings)
    return ", ".join(entries) or None
