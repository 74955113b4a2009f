"""The Server-Timing value (server.server_timing): our stages, then the upstreams'."""

from __future__ import annotations

from gateway.request_context import RequestContext
from gateway.server.server_timing import server_timing


def test_stages_in_milliseconds_then_upstream_entries() -> None:
    context = RequestContext("r", "v2")
    assert server_timing(context) is None
    context.record("preprocess", 0.000123)
    context.record("hop.predictor", 0.0045)
    context.upstream_timings.append("predictor.predict;dur=3")
    assert server_timing(context) == (
        "preprocess;dur=0.123, hop.predictor;dur=4.500, predictor.predict;dur=3"
    )
