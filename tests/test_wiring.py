"""The server's wiring: each model's hops built once from the flags, closed at stop."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from gateway import InferInput, InferRequest
from gateway.flags import parser
from gateway.hops.mock import MockHop
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_server import ModelServer
from gateway.predictor_config import PredictorConfig
from gateway.wiring import (
    Upstreams,
    connect,
    disconnect,
    model_predictor_config,
    predictor_settings,
)
from tests.hops.upstreams import serve_app
from tests.models import EchoModel


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
    upstreams = Upstreams.from_flags(parser.parse_args([]))
    built = connect(model, upstreams, PredictorConfig("p:1", "v2"), metrics=Metrics())
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
    return parser.parse_args([])


async def _wait_ready(server: ModelServer) -> None:
    import asyncio

    for _ in range(200):
        if await server.dataplane.ready():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("server did not become ready")


# What the flags say about each hop


def test_every_hop_flag_reaches_the_predictors_settings() -> None:
    args = parser.parse_args(
        [
            "--predictor_host", "p:1", "--predictor_protocol", "grpc-v2",
            "--predictor_use_ssl", "true", "--predictor_request_timeout_seconds", "7",
            "--predictor_request_retries", "3", "--retry_backoff_initial", "0.2",
            "--retry_backoff_max", "4", "--retry_on_timeout", "true",
            "--predictor_rest_format", "json", "--forward_headers", " X-Tenant ,,x-b",
            "--forward_authorization", "true", "--predictor_ca_file", "ca.pem",
            "--predictor_max_connections", "9",
        ]
    )  # fmt: skip
    predictor = Upstreams.from_flags(args).predictor
    assert predictor == HopSettings(
        role="predictor",
        host="p:1",
        protocol="grpc-v2",
        use_ssl=True,
        timeout=7,
        retry=RetryPolicy(
            retries=3, backoff_initial=0.2, backoff_max=4, retry_on_timeout=True, budget=7
        ),
        rest_format="json",
        forward_headers=frozenset({"x-tenant", "x-b"}),
        forward_authorization=True,
        max_connections=9,
        ca_file="ca.pem",
    )
    # KServe's deprecated --protocol still wins over --predictor_protocol.
    old = parser.parse_args(["--predictor_host", "p:1", "--protocol", "v2"])
    assert Upstreams.from_flags(old).predictor.protocol == "v2"


def test_the_default_retry_budget_is_envoys_and_a_lone_request_still_retries() -> None:
    budget = Upstreams.from_flags(parser.parse_args(["--predictor_host", "p:1"])).budget
    assert (budget.percent, budget.min_concurrency) == (20.0, 3)
    budget.request_started()
    # A request's retries follow one another: each holds the one slot the floor leaves it.
    for _ in range(10):
        assert budget.try_retry()
        budget.retry_finished()
    # Three requests retrying at once fit within the floor; a fourth is refused.
    for _ in range(3):
        budget.request_started()
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]


def test_the_explainer_retries_as_the_flags_say() -> None:
    def explainer(*flags: str) -> HopSettings:
        return Upstreams.from_flags(
            parser.parse_args(["--explainer_host", "e:1", *flags])
        ).explainer

    assert explainer().retry.retries == 0
    # By default as often as the predictor...
    inherited = explainer("--predictor_request_retries", "3", "--retry_backoff_initial", "0.2")
    assert inherited.retry.retries == 3
    assert inherited.retry.backoff_initial == 0.2
    # ...or as often as its own flag says, the predictor's left alone.
    own = Upstreams.from_flags(
        parser.parse_args(["--predictor_request_retries", "3", "--explainer_request_retries", "1"])
    )
    assert (own.explainer.retry.retries, own.predictor.retry.retries) == (1, 3)
    assert (
        explainer(
            "--explainer_request_retries", "0", "--predictor_request_retries", "2"
        ).retry.retries
        == 0
    )
    # The explainer's own protocol and host; the rest as the predictor is reached.
    settings = explainer("--explainer_protocol", "v2", "--predictor_request_timeout_seconds", "9")
    assert (settings.role, settings.host, settings.protocol, settings.timeout) == (
        "explainer",
        "e:1",
        "v2",
        9,
    )
    assert "--predictor_request_retries" in parser.format_help()
    help_text = " ".join(parser.format_help().split())
    assert (
        "retries of a failed call to the explainer (default: as --predictor_request_retries)"
        in (help_text)
    )


class FlakyExplainer:
    """A v1 explainer that answers 503 `failures` times, then explains."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def explain(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return web.json_response({"error": "warming up"}, status=503)
        body = await request.json()
        return web.json_response({"explanations": body["instances"]})


@pytest.mark.parametrize(
    ("flags", "status", "calls"),
    [
        pytest.param(["--explainer_request_retries", "2"], 200, 3, id="own-flag"),
        pytest.param(["--predictor_request_retries", "2"], 200, 3, id="predictors-flag"),
        pytest.param([], 503, 1, id="no-retries"),
    ],
)
async def test_a_flaky_explainer_is_retried_as_the_flags_say(
    flags: list[str], status: int, calls: int
) -> None:
    explainer = FlakyExplainer(failures=2)
    app = web.Application()
    app.router.add_post("/v1/models/m:explain", explainer.explain)
    async with serve_app(app) as address:
        args = parser.parse_args(
            ["--explainer_host", address, "--retry_backoff_initial", "0.001", *flags]
        )
        gateway = ModelServer(
            http_port=0,
            grpc_port=0,
            listen_address="127.0.0.1",
            enable_grpc=False,
            configure_logging=False,
            args=args,
        )
        transformer = Model("m")
        transformer.ready = True
        gateway.register_model(transformer)
        await gateway.startup()
        try:
            await _wait_ready(gateway)
            url = f"http://127.0.0.1:{gateway.bound_http_port}/v1/models/m:explain"
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, json={"instances": [1, 2]}) as response,
            ):
                assert response.status == status
                answer = await response.json()
        finally:
            await gateway.shutdown()
    assert explainer.calls == calls
    if status == 200:
        assert answer == {"explanations": [1, 2]}


def test_a_models_predictor_config_sets_what_kserve_names_the_flags_the_rest() -> None:
    flags = parser.parse_args(
        ["--predictor_host", "flags:1", "--forward_headers", "x-tenant", "--retry_backoff_max", "3"]
    )
    base = Upstreams.from_flags(flags).predictor
    config = PredictorConfig("own:2", "grpc-v2", True, 9, 4)
    settings = predictor_settings(base, config, "m")
    assert (settings.host, settings.protocol, settings.use_ssl, settings.timeout) == (
        "own:2",
        "grpc-v2",
        True,
        9,
    )
    assert (settings.retry.retries, settings.retry.budget, settings.retry.backoff_max) == (4, 9, 3)
    assert (settings.model_name, settings.forward_headers) == ("m", frozenset({"x-tenant"}))
