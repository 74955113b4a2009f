"""Saying "ready" only when /v2/health/ready would (server.readiness): not while a model failed
to load or waits for its predictor, and once (not again) when it becomes ready."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.server import readiness
from tests.hops.upstreams import dataplane
from tests.models import EchoModel


class Waiting(EchoModel):
    """A model whose predictor becomes ready when the test says so."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.predictor_up = asyncio.Event()

    async def predictor_ready(self) -> bool:
        return self.predictor_up.is_set()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "POLL_SECONDS", 0.01)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.model_server"]


async def test_ready_is_said_once_the_predictor_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    model = Waiting("m")
    plane = dataplane([model])
    task = asyncio.create_task(readiness.announce(plane, "m"))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert messages(caplog) == [
        "not ready yet: the predictor of m is not ready (--enable_predictor_health_check); "
        "waiting for it"
    ]
    assert not await plane.ready()
    model.predictor_up.set()
    await asyncio.wait_for(task, 5)
    assert await plane.ready()
    assert messages(caplog)[-1] == "ready: m"
    assert len(messages(caplog)) == 2


async def test_a_model_that_did_not_load_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    broken = EchoModel("broken")
    broken.ready = False
    plane = dataplane([EchoModel("fine"), broken])
    task = asyncio.create_task(readiness.announce(plane, "fine, broken"))
    await asyncio.sleep(0.05)
    assert messages(caplog) == ["not ready yet: broken did not load (see above)"]
    plane.draining = True  # a stop ends the wait, without a "ready"
    await asyncio.wait_for(task, 5)
    assert not any(m.startswith("ready") for m in messages(caplog))
