"""A graph's wiring: ``--service`` flags, routerTimeouts onto the server, one hop per service
built from the server's flags, and the graph they make, over real upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import yaml

from gateway import InferInput, InferRequest, InferResponse
from gateway.errors import UpstreamTimeout
from gateway.flags import parser
from gateway.graph import GraphSpec, parse_graph
from gateway.graph_wiring import GraphUpstreams, server_flags, services
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.wiring import Upstreams, connect, disconnect
from tests.hops.upstreams import serve_grpc, serve_rest
from tests.models import EchoModel, SlowModel

BASE = HopSettings(
    role="predictor",
    host="",
    timeout=20,
    retry=RetryPolicy(retries=3, backoff_initial=0.01, budget=20),
    forward_headers=frozenset({"x-tenant"}),
)


RESOURCE = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
            "metadata": {"name": "g"}}  # fmt: skip


def graph(spec: str, urls: dict[str, str]) -> GraphSpec:
    """The graph "g" whose spec is the YAML `spec`, its services at `urls`."""
    return parse_graph({**RESOURCE, "spec": yaml.safe_load(spec)}, services=urls)


def test_service_flags() -> None:
    assert services(["a=http://h:1/v1/models/a:predict", " b = grpc://h:2/b "]) == {
        "a": "http://h:1/v1/models/a:predict",
        "b": "grpc://h:2/b",
    }
    assert services(["a=grpc://h/a", "a=grpc://h/a"]) == {"a": "grpc://h/a"}
    for bad in ("a", "=grpc://h/a", "a="):
        with pytest.raises(ValueError, match="NAME=URL"):
            services([bad])
    with pytest.raises(ValueError, match="given twice"):
        services(["a=grpc://h/a", "a=grpc://h/b"])


def test_router_timeouts_become_the_rest_servers() -> None:
    args = parser.parse_args([])
    spec = graph(
        "{nodes: {root: {routerType: Sequence, steps: [{serviceName: a}]}}, "
        "routerTimeouts: {serverRead: 7, serverIdle: 9, serverWrite: 11}}",
        {"a": "grpc://h:1/a"},
    )
    changed = server_flags(args, spec)
    assert (changed.request_body_timeout, changed.timeout_keep_alive) == (7, 9)
    assert (args.request_body_timeout, args.timeout_keep_alive) == (60, 65)  # untouched
    plain = graph("{nodes: {root: {routerType: Sequence, steps: [{serviceName: a}]}}}",
                  {"a": "grpc://h:1/a"})  # fmt: skip
    assert vars(server_flags(args, plain)) == vars(args)


def test_each_service_is_reached_as_the_flags_say_at_its_own_address() -> None:
    spec = graph(
        """
        routerTimeouts: {serviceClient: 2}
        nodes:
          root:
            routerType: Ensemble
            steps:
            - {serviceName: cat}
            - {serviceUrl: "https://cats.example:8443/v2/models/cat/versions/4/infer"}
            - {serviceUrl: "grpc://dogs:9000/v2/models/dog"}
        """,
        {"cat": "http://127.0.0.1:81/v1/models/kitten:predict"},
    )
    steps = GraphUpstreams.from_spec(spec, BASE)
    by_role = {settings.role: settings for settings in steps.hops.values()}
    # Named after the service; a URL's hop after its model (with its address when the name
    # is taken).
    assert set(by_role) == {"cat", "cat@cats.example:8443", "dog"}
    cat = by_role["cat"]
    assert (cat.host, cat.protocol, cat.model_name, cat.use_ssl) == (
        "127.0.0.1:81", "v1", "kitten", False,
    )  # fmt: skip
    tls = by_role["cat@cats.example:8443"]
    assert (tls.protocol, tls.model_name, tls.use_ssl) == ("v2", "cat", True)
    assert (by_role["dog"].protocol, by_role["dog"].host) == ("grpc-v2", "dogs:9000")
    for settings in steps.hops.values():
        # serviceClient caps each call; the rest is the server's flags.
        assert (settings.timeout, settings.retry.budget) == (2, 2)
        assert settings.retry.retries == 3
        assert settings.forward_headers == frozenset({"x-tenant"})
    # No serverWrite: the whole graph within the flags' timeout.
    assert steps.deadline == 20


class Versions(EchoModel):
    """An echo that remembers the version each request named."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.versions: list[str | None] = []

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        self.versions.append(payload.model_version)
        return await super().predict(payload, headers)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, str, dict[str, Model]]]:
    models: dict[str, Model] = {"echo": Versions("echo"), "slow": SlowModel("slow", delay=30)}
    async with serve_rest(list(models.values())) as rest, serve_grpc(list(models.values())) as rpc:
        yield rest, rpc, models


def request(version: str | None = None) -> InferRequest:
    tensor = InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    return InferRequest("g", [tensor], model_version=version)


async def test_the_graph_over_real_hops(upstream: tuple[str, str, dict[str, Model]]) -> None:
    rest, rpc, models = upstream
    spec = graph(
        """
        nodes:
          root:
            routerType: Ensemble
            steps: [{name: rest, serviceName: rest}, {name: grpc, serviceName: grpc}]
        """,
        {
            "rest": f"http://{rest}/v2/models/echo/versions/7/infer",
            "grpc": f"grpc://{rpc}/echo",
        },
    )
    hop = GraphUpstreams.from_spec(spec, BASE).build(metrics=Metrics())
    async with hop:
        # The graph's version is the graph's: each step asks for the one its URL names.
        response = await hop.infer(request("1"), {})
        assert isinstance(response, InferResponse)
        assert {o.name for o in response.outputs} == {"rest.x", "grpc.x"}
        assert sorted(models["echo"].versions, key=str) == ["7", None]  # type: ignore[attr-defined]
        assert await hop.ready()
        # Readiness is each step's model's, not its server's.
        models["echo"].ready = False
        assert not await hop.ready()


async def test_server_write_bounds_the_whole_graph(
    upstream: tuple[str, str, dict[str, Model]],
) -> None:
    rest, _, _ = upstream
    spec = graph(
        """
        routerTimeouts: {serverWrite: 0.2}
        nodes: {root: {routerType: Sequence, steps: [{serviceName: slow}]}}
        """,
        {"slow": f"http://{rest}/v2/models/slow/infer"},
    )
    hop = GraphUpstreams.from_spec(spec, BASE).build(metrics=None)
    async with hop:
        with pytest.raises(UpstreamTimeout) as info:
            await asyncio.wait_for(hop.infer(request(), {}), 20)
    # The step had what was left of the graph's 0.2 s when it started (under load, less).
    match = re.search(r"did not answer within (\d+\.\d+) s", str(info.value))
    assert match is not None, str(info.value)
    assert 0 < float(match[1]) <= 0.2


async def test_the_graph_is_the_models_predictor_while_the_server_runs(
    upstream: tuple[str, str, dict[str, Model]],
) -> None:
    rest, _, _ = upstream
    spec = graph(
        "{nodes: {root: {routerType: Sequence, steps: [{serviceName: e}]}}}",
        {"e": f"http://{rest}/v2/models/echo/infer"},
    )
    upstreams = Upstreams.from_flags(parser.parse_args([]), spec)
    model, other = Model("g"), Model("other")
    built = connect(model, upstreams, None, metrics=Metrics())
    assert built == [model.predictor_hop]
    assert connect(other, upstreams, None, metrics=Metrics()) == []
    response = await model(request())
    assert isinstance(response, InferResponse)
    assert response.outputs[0].as_numpy().tolist() == [1.0, 2.0]
    assert await model.predictor_ready()
    await disconnect(model, built)
    assert model.predictor_hop is None
