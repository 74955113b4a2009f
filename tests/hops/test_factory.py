"""Hops are built from their settings alone, in the right order."""

from __future__ import annotations

from gateway.hops.factory import build_hop
from gateway.hops.grpc import GrpcHop
from gateway.hops.headers import Forwarding
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings
from gateway.hops.shaping import Shaping
from gateway.hops.trace import Traced


def test_the_chain_is_shaping_forwarding_retrying_traced_transport() -> None:
    for protocol, transport in (("v2", RestHop), ("v1", RestHop), ("grpc-v2", GrpcHop)):
        settings = HopSettings(role="predictor", host="h:1", model_name="m", protocol=protocol)
        shaping = build_hop(settings, metrics=None)
        assert isinstance(shaping, Shaping)
        assert shaping.model_name == "m"
        hop = shaping.inner
        assert isinstance(hop, Forwarding)
        assert isinstance(hop.inner, Retrying)
        assert isinstance(hop.inner.inner, Traced)
        assert isinstance(hop.inner.inner.inner, transport)
        assert hop.name == shaping.name == "predictor"
        assert hop.protocol == shaping.protocol == protocol
