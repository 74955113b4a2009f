"""The Server-Timing value (server.server_timing): who answers, our stages, then the
upstreams', a gateway's named after it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.hops.factory import build_hop
from gateway.hops.settings import HopSettings
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.request_context import RequestContext
from gateway.server.rest import create_app
from gateway.server.server_timing import server_timing
from tests.hops.upstreams import SETTINGS, dataplane
from tests.models import EchoModel
from tests.server.rest_support import v2_body


def test_stages_in_milliseconds_then_upstream_entries() -> None:
    context = RequestContext("r", "v2")
    assert server_timing(context) is None
    context.record("preprocess", 0.000123)
    context.record("hop.predictor", 0.0045)
    context.upstream_timings.append("predictor.predict;dur=3")
    assert server_timing(context) == (
        "preprocess;dur=0.123, hop.predictor;dur=4.500, predictor.predict;dur=3"
    )


def test_identity_leads_the_entries_when_there_are_any() -> None:
    context = RequestContext("r", "v2")
    assert server_timing(context, 'gateway;desc="a"') is None  # nothing timed: no header
    context.record("predict", 0.001)
    assert server_timing(context, 'gateway;desc="a"') == 'gateway;desc="a", predict;dur=1.000'


async def test_a_chain_names_each_gateway_by_its_own_name() -> None:
    """A -> B -> C, each a real server named as a ModelServer names it: A's header has B's
    stages as B's (not the predictor's), and C's under B's."""
    async with AsyncExitStack() as stack:
        names = {"c": "m-predictor", "b": "m-proxy", "a": "m-proxy-a"}
        host = await _serve(stack, EchoModel("m"), names["c"])
        for gateway in ("b", "a"):
            forwarder = Model("m")
            forwarder.ready = True
            hop = build_hop(HopSettings("predictor", host, "m", "v2"), metrics=Metrics())
            stack.push_async_callback(hop.aclose)
            forwarder.predictor_hop = hop
            host = await _serve(stack, forwarder, names[gateway])
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{host}/v2/models/m/infer", json=v2_body()) as response,
        ):
            assert response.status == 200
            timing = response.headers["Server-Timing"]
    names_seen = [entry.split(";")[0] for entry in timing.split(", ")]
    assert names_seen == [
        "gateway",  # A says who it is
        "hop.predictor",
        "predict",
        "m-proxy.hop.predictor",
        "m-proxy.predict",
        "m-proxy.m-predictor.predict",
    ]
    assert timing.startswith('gateway;desc="m-proxy-a", ')


async def _serve(stack: AsyncExitStack, model: Model, service: str) -> str:
    app = create_app(dataplane([model]), SETTINGS, Metrics(), service_name=service)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    stack.push_async_callback(server.close)
    return f"127.0.0.1:{server.port}"
