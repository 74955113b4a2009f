"""The ``Server-Timing`` header: where a request's time went, per stage and per upstream."""

from __future__ import annotations

from gateway.request_context import RequestContext

HEADER = "Server-Timing"


def server_timing(context: RequestContext, identity: str | None = None) -> str | None:
    """``preprocess;dur=0.123, predict;dur=4.5`` (milliseconds), then the upstreams' entries
    as they reported them, led by `identity` (the entry naming this gateway, see
    `gateway.timing_entries`); None when there is nothing to report."""
    entries = [f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in context.timings]
    entries.extend(context.upstream_timings)
    if not entries:
        return None
    if identity is not None:
        entries.insert(0, identity)
    return ", ".join(entries)
