"""Fixtures of the end-to-end tests: one predictor process for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.support import predictor_command, start_servers
from tests.server.procs import ServerProcess


@pytest.fixture(scope="session")
def predictor() -> Iterator[ServerProcess]:
    """An EchoModel server process (REST v1 + v2 and gRPC v2) that no test stops."""
    with ExitStack() as stack:
        (server,) = start_servers(stack, predictor_command())
        yield server
