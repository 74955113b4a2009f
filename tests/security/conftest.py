"""Hostile-input tests: the hypothesis budget, and one gateway under attack for the folder.

CI runs a fixed budget of cases (the ``security`` profile, loaded by default). A longer fuzz
run uses the ``fuzz`` profile, chosen by an environment variable::

    HYPOTHESIS_PROFILE=fuzz python -m pytest tests/security -p no:cacheprovider
    HYPOTHESIS_PROFILE=fuzz GATEWAY_FUZZ_EXAMPLES=300 python -m pytest tests/security ...

The profile's ``max_examples`` is the budget of the heaviest property tests; lighter ones run
a multiple of it (see `harness.fuzzing`). Under CI (``CI=true``) hypothesis loads its own
``ci`` profile first, which these inherit: the cases are then derandomized, the same on every
run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from gateway.settings import ServerSettings
from tests.models import EchoModel
from tests.security.harness import (
    BODY_TIMEOUT,
    GRPC_MAX_RECEIVE,
    HOST,
    MAX_BODY,
    RELAYS,
    Gateway,
    LogCapture,
)

_COMMON = {
    "deadline": None,
    # The server is one fixture shared by every example, on purpose: it must keep serving.
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("security", max_examples=25, **_COMMON)
# GATEWAY_FUZZ_EXAMPLES sizes a fuzz run to the time at hand.
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "2000")), **_COMMON
)


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """The REST and gRPC servers, with small limits, shared by the folder's tests; their
    `RELAYS` models forward to a second gateway (the predictor), which echoes."""
    predictor = Gateway(
        ServerSettings(listen_address=HOST), [EchoModel(name) for name in RELAYS]
    ).start()
    settings = ServerSettings(
        listen_address=HOST,
        max_request_bytes=MAX_BODY,
        grpc_max_receive_message_length=GRPC_MAX_RECEIVE,
        request_body_timeout=BODY_TIMEOUT,
    )
    server = Gateway(settings, upstream=predictor).start()
    try:
        yield server
    finally:
        server.stop()
        predictor.stop()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Every record the gateway, aiohttp and gRPC's Python side log, at DEBUG and up."""
    with LogCapture.installed() as capture:
        yield capture
