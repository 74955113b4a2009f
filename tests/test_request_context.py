"""The request being served (gateway.request_context): its deadline, its stages' times."""

from __future__ import annotations

import asyncio
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import request_context
from gateway.request_context import RequestContext


def test_remaining_and_stage_seconds() -> None:
    assert RequestContext("r", "v2").remaining() is None
    context = RequestContext("r", "v2", deadline=time.monotonic() + 5)
    remaining = context.remaining()
    assert remaining is not None
    assert 4 < remaining <= 5
    context.record("predict", 0.25)
    context.record("hop.predictor", 0.5)
    context.record("predict", 0.25)
    assert context.stage_seconds("predict") == 0.5
    assert context.stage_seconds("explain") == 0


async def test_serving_makes_the_context_current_here_and_in_tasks_started_here() -> None:
    assert request_context.current() is None
    context = RequestContext("r", "v2")
    with request_context.serving(context) as entered:
        assert entered is context
        assert request_context.current() is context
        assert await asyncio.create_task(_current()) is context
    assert request_context.current() is None


async def _current() -> RequestContext | None:
    return request_context.current()


def test_a_stage_is_timed_and_traced_when_the_request_has_a_tracer() -> None:
    with request_context.stage("predict"):  # outside a request: nothing to record
        pass
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = RequestContext("r", "v2", tracer=provider.get_tracer("t"))
    with (
        request_context.serving(context),
        pytest.raises(RuntimeError),
        request_context.stage("preprocess"),
    ):
        raise RuntimeError("a failing stage is timed too")
    [(stage, seconds)] = context.timings
    assert stage == "preprocess"
    assert seconds >= 0
    [span] = exporter.get_finished_spans()
    assert span.name == "preprocess"
    assert not span.status.is_ok
