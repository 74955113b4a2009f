"""The REST door's server, for the tests of `server.rest*` and `server.openapi` (other tests
here define their own `served`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.settings import ServerSettings
from tests.server.rest_support import MAX_BODY, Served, serve


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    settings = ServerSettings(
        listen_address="127.0.0.1", max_request_bytes=MAX_BODY, enable_docs_url=True
    )
    async with serve(settings) as served:
        yield served
