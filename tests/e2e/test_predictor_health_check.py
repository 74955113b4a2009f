"""`--enable_predictor_health_check`: a gateway is ready only while its predictor is.

Gateway processes for each predictor protocol, started before their predictor (a real process
on fixed ports): not ready while it is down, ready once it is up, not ready once it is killed,
ready again once it restarts on the same ports. Live throughout. Readiness is asked every way a
probe can: REST v2 server and model, REST v1 model, gRPC ServerReady and ModelReady.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import grpc
import pytest

from gateway._proto import SERVICE_NAME, pb
from tests.e2e.support import MODEL, PROTOCOLS, gateway_command, predictor_command, start_servers
from tests.examples.processes import status
from tests.hops.upstreams import free_port
from tests.server.procs import ServerProcess, wait_until

# gRPC's longest wait between reconnection attempts (gateway.hops.grpc.CHANNEL_OPTIONS) and
# time to spare: how long a gateway may take to see its predictor back.
WITHIN = 5.0 + 5.0


def readiness(gateway: ServerProcess) -> dict[str, bool]:
    """Each way of asking `gateway` whether it is ready, and its answer."""
    base = gateway.base_url
    answers = {
        "rest v2 server": status(f"{base}/v2/health/ready") == 200,
        "rest v2 model": status(f"{base}/v2/models/{MODEL}/ready") == 200,
        "rest v1 model": status(f"{base}/v1/models/{MODEL}") == 200,
    }
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        server = channel.unary_unary(
            f"/{SERVICE_NAME}/ServerReady",
            request_serializer=pb.ServerReadyRequest.SerializeToString,
            response_deserializer=pb.ServerReadyResponse.FromString,
        )
        model = channel.unary_unary(
            f"/{SERVICE_NAME}/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        answers["grpc server"] = server(pb.ServerReadyRequest(), timeout=10).ready
        answers["grpc model"] = model(pb.ModelReadyRequest(name=MODEL), timeout=10).ready
    return answers


def assert_live(gateway: ServerProcess) -> None:
    assert status(f"{gateway.base_url}/v2/health/live") == 200


def wait_readiness(gateways: dict[str, ServerProcess], ready: bool) -> None:
    """Until every way of asking every gateway answers `ready` (at most `WITHIN` seconds)."""
    deadline = time.monotonic() + WITHIN
    while True:
        answers = {protocol: readiness(gateway) for protocol, gateway in gateways.items()}
        wrong = {p: [k for k, v in a.items() if v is not ready] for p, a in answers.items()}
        if not any(wrong.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still {'not ' if ready else ''}ready after {WITHIN} s: {wrong}")
        time.sleep(0.1)


@pytest.mark.timeout(90)
def test_ready_only_while_the_predictor_is() -> None:
    http, grpc_port = free_port(), free_port()
    predictor = predictor_command("--http_port", str(http), "--grpc_port", str(grpc_port))
    commands = {
        protocol: gateway_command(
            f"127.0.0.1:{grpc_port if protocol == 'grpc-v2' else http}",
            protocol,
            "--enable_predictor_health_check",
        )
        for protocol in PROTOCOLS
    }
    with ExitStack() as stack:
        started = start_servers(stack, *commands.values(), ready=False)
        gateways = dict(zip(commands, started, strict=True))

        # Down: the predictor has never run, and each gateway has loaded its model; it says
        # why it is not ready, and does not claim it is.
        for protocol, gateway in gateways.items():
            wait_until(lambda gateway=gateway: "not ready yet:" in gateway.output(), timeout=30)
            assert f"loaded: {MODEL}" in gateway.output()
            assert f"the predictor of {MODEL} is not ready" in gateway.output()
            assert not any(readiness(gateway).values()), protocol
            assert f"ready: {MODEL}" not in gateway.output().replace(f"loaded: {MODEL}", "")
            assert_live(gateway)

        with ExitStack() as first:
            start_servers(first, predictor)
            wait_readiness(gateways, ready=True)
            for gateway in gateways.values():  # said once it became so
                wait_until(lambda gateway=gateway: f"ready: {MODEL}\n" in gateway.output(), 10)
        # The predictor is killed (SIGKILL), connections and all.
        wait_readiness(gateways, ready=False)
        for gateway in gateways.values():
            assert_live(gateway)

        start_servers(stack, predictor)  # restarted, on the same ports
        wait_readiness(gateways, ready=True)
