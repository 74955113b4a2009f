"""Hops are built once, from the flags, in the right order, and closed at stop."""

from __future__ import annotations

import aiohttp
import numpy as np

from gateway import InferInput, InferRequest
from gateway.hops.factory import HopOptions, build_hop, connect, disconnect, model_predictor_config
from gateway.hops.grpc import GrpcHop
from gateway.hops.headers import Forwarding
from gateway.hops.mock import MockHop
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying
from gateway.hops.settings import HopSettings
from gateway.hops.trace import Traced
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_server import ModelServer
from gateway.predictor_config import PredictorConfig
from tests.models import EchoModel


def test_the_chain_is_forwarding_retrying_traced_transport() -> None:
    for protocol, transport in (("v2", RestHop), ("v1", RestHop), ("grpc-v2", GrpcHop)):
        settings = HopSettings(role="predictor", host="h:1", model_name="m", protocol=protocol)
        hop = build_hop(settings, metrics=None)
        assert isinstance(hop, Forwarding)
        assert isinstance(hop.inner, Retrying)
        assert isinstance(hop.inner.inner, Traced)
        assert isinstance(hop.inner.inner.inner, transport)
        assert hop.name == "predictor"
        assert hop.protocol == protocol


class OldStyle(Model):
    """A KServe transformer of the older style: it sets predictor_host itself."""

    def __init__(self, name: str, predictor_host: str, protocol: str) -> None:
        super().__init__(name)
        self.predictor_host = predictor_host
        self.protocol = protocol


def test_a_model_that_names_its_predictor_wins_over_the_server() -> None:
    server = PredictorConfig("server:1", "v2", predictor_request_retries=2)
    config = model_predictor_config(OldStyle("m", "mine:2", "grpc-v2"), server)
    assert config is not None
    assert (config.predictor_host, config.predictor_protocol) == ("mine:2", "grpc-v2")
    assert config.predictor_request_retries == 2
    plain = Model("p")
    assert model_predictor_config(plain, server) is server
    plain.predictor_config = PredictorConfig("own:3", "v1")
    assert model_predictor_config(plain, server) == PredictorConfig("own:3", "v1")
    assert model_predictor_config(Model("q"), None) is None


async def test_connect_builds_what_is_missing_and_disconnect_closes_only_that() -> None:
    model = Model("m")
    model.explainer_host = "explainer:9"
    user_hop = MockHop()
    model.predictor_hop = user_hop
    built = connect(model, PredictorConfig("p:1", "v2"), HopOptions(), metrics=Metrics())
    assert model.predictor_hop is user_hop, "a hop the user set is kept"
    assert built == [model.explainer_hop]
    assert model.explainer_hop is not None
    assert model.explainer_hop.protocol == "v1"
    await disconnect(model, built)
    assert model.explainer_hop is None
    assert model.predictor_hop is user_hop
    assert not user_hop.closed


async def test_the_server_connects_models_to_its_predictor_and_forwards() -> None:
    predictor = ModelServer(
        http_port=0,
        grpc_port=0,
        listen_address="127.0.0.1",
        configure_logging=False,
        args=_no_flags(),
    )
    predictor.register_model(EchoModel("m"))
    await predictor.startup()
    gateway = ModelServer(
        http_port=0,
        grpc_port=0,
        listen_address="127.0.0.1",
        configure_logging=False,
        args=_no_flags(),
        predictor_config=PredictorConfig(f"127.0.0.1:{predictor.bound_grpc_port}", "grpc-v2"),
    )
    transformer = Model("m")
    transformer.ready = True
    gateway.register_model(transformer)
    await gateway.startup()
    try:
        await _wait_ready(gateway)
        assert transformer.predictor_hop is not None
        tensor = InferInput("x", [2], "INT32")
        tensor.set_data_from_numpy(np.array([7, 8], dtype=np.int32), binary_data=False)
        body, _ = InferRequest("m", [tensor]).to_rest()
        url = f"http://127.0.0.1:{gateway.bound_http_port}/v2/models/m/infer"
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["outputs"][0]["data"] == [7, 8]
    finally:
        await gateway.shutdown()
        await predictor.shutdown()
    assert transformer.predictor_hop is None, "the hop the server built is closed and removed"


def _no_flags() -> object:
    from gateway.flags import parser

    return parser.parse_args([])


async def _wait_ready(server: ModelServer) -> None:
    import asyncio

    for _ in range(200):
        if await server.dataplane.ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("server did not become ready")


def test_headers_named_in_connection_are_not_forwarded() -> None:
    from gateway.hops.headers import outbound

    settings = HopSettings(
        role="predictor", host="h:1", model_name="m", forward_headers=frozenset({"x-tenant"})
    )
    headers = {"Connection": "keep-alive, X-Tenant", "x-tenant": "a", "x-request-id": "r"}
    assert outbound(headers, settings) == {"x-request-id": "r"}
    assert outbound({"x-tenant": "a"}, settings) == {"x-tenant": "a"}
