"""`GrpcHop`'s channels when the upstream goes away and comes back: reached again at once
(a channel that failed to connect is replaced rather than left backing off), not held by
another hop's backoff, and replaced channels leaving no connection behind."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.hops.grpc import RENEW_PAUSE, GrpcHop
from tests.faults.support import usage
from tests.hops.test_grpc import MARGIN, settings, small
from tests.hops.upstreams import free_port, serve_grpc
from tests.models import EchoModel


async def test_upstream_restarted_on_the_same_port_is_reached_again() -> None:
    port = free_port()
    async with GrpcHop(settings(f"127.0.0.1:{port}")) as hop:
        async with serve_grpc([EchoModel()], port):
            assert (await hop.infer(small(), {})).outputs[0].as_numpy().tolist() == [1.0, 2.0]
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
        async with serve_grpc([EchoModel()], port):
            # The channel that failed to connect was replaced: the first call after the
            # upstream is back is answered, with no reconnection backoff to sit out.
            response = await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
    assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]


async def test_a_hop_started_before_its_upstream_is_answered_once_it_is_up() -> None:
    port = free_port()
    async with GrpcHop(settings(f"127.0.0.1:{port}")) as hop:
        for _ in range(3):  # a few calls while it is down (the channel may back off)
            with pytest.raises(UpstreamUnavailable):
                await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
        await asyncio.sleep(RENEW_PAUSE)  # the next failure may replace the channel again
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
        async with serve_grpc([EchoModel()], port):
            response = await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
    assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]


async def test_replaced_channels_leave_no_connection_behind() -> None:
    """gRPC core keeps a closed channel, connecting, while any call made on it lives: the hop
    lets go of each call as it ends, so channels replaced while the upstream was down are
    gone when it is back (the collector is off here: nothing is left to it)."""
    port = free_port()
    gc.disable()
    try:
        async with GrpcHop(settings(f"127.0.0.1:{port}")) as hop:
            for _ in range(4):  # each round's failures replace the channel
                calls = (hop.infer(small(), {}) for _ in range(3))
                failures = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(f, UpstreamUnavailable) for f in failures), failures
                await asyncio.sleep(RENEW_PAUSE)
            async with serve_grpc([EchoModel()], port):
                await asyncio.wait_for(hop.infer(small(), {}), MARGIN)
                connections = []
                for _ in range(20):  # past the replaced channels' reconnection backoff
                    connections.append(usage(os.getpid(), (port,)).upstream_sockets)
                    await asyncio.sleep(0.05)
    finally:
        gc.enable()
    assert max(connections) == 1, connections


async def test_a_new_hop_is_not_held_by_another_hops_backoff() -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    async with GrpcHop(settings(target)) as down:
        for _ in range(2):  # the second call's channel is left backing off
            with pytest.raises(UpstreamUnavailable):
                await asyncio.wait_for(down.infer(small(), {}), MARGIN)
        async with serve_grpc([EchoModel()], port), GrpcHop(settings(target)) as fresh:
            # gRPC would share the backing-off connection between channels to one target;
            # each hop's channel has its own, so a new hop connects at once.
            response = await asyncio.wait_for(fresh.infer(small(), {}), MARGIN)
    assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]
