"""`Retrying`: what is retried, how long it waits, where it stops, and what it reports.

Every `Retrying` here gets an injected sleep that only records, so nothing waits for real.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.errors import (
    InvalidInput,
    ModelNotReady,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.hops.base import Headers, Hop
from gateway.hops.mock import MockHop
from gateway.hops.rest import RestHop
from gateway.hops.retry import Retrying, is_retryable, retry_reason
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.metrics import Metrics
from gateway.passthrough import Passthrough
from gateway.request_context import RequestContext, serving
from gateway.tensor import InferInput

POLICY = RetryPolicy(retries=3, backoff_initial=0.1, backoff_max=1.0)
TIMEOUTS_RETRIED = RetryPolicy(retries=3, retry_on_timeout=True)


def unavailable() -> UpstreamError:
    return UpstreamUnavailable("connection refused", upstream="predictor")


RETRIED: list[Any] = [
    pytest.param(unavailable, id="unavailable"),
    pytest.param(lambda: UpstreamStatusError("bad gateway", status=502), id="502"),
    pytest.param(lambda: UpstreamStatusError("busy", status=503), id="503"),
    pytest.param(lambda: UpstreamStatusError("gateway timeout", status=504), id="504"),
    pytest.param(
        lambda: UpstreamStatusError("no channel", status=503, code=grpc.StatusCode.UNAVAILABLE),
        id="grpc-unavailable",
    ),
]

NOT_RETRIED: list[Any] = [
    pytest.param(lambda: UpstreamStatusError("bad", status=400), id="400"),
    pytest.param(lambda: UpstreamStatusError("missing", status=404), id="404"),
    pytest.param(lambda: UpstreamStatusError("slow down", status=429), id="429"),
    pytest.param(
        lambda: UpstreamStatusError("odd", status=400, code=grpc.StatusCode.UNAVAILABLE),
        id="4xx-with-unavailable-code",
    ),
    pytest.param(lambda: UpstreamStatusError("boom", status=500), id="500"),
    pytest.param(lambda: UpstreamStatusError("nope", status=501), id="501"),
    pytest.param(
        lambda: UpstreamStatusError("arg", status=400, code=grpc.StatusCode.INVALID_ARGUMENT),
        id="grpc-invalid-argument",
    ),
    pytest.param(lambda: UpstreamTimeout("slow"), id="timeout"),
    pytest.param(lambda: UpstreamProtocolError("garbage"), id="protocol"),
    pytest.param(lambda: UpstreamError("generic"), id="upstream-base"),
    pytest.param(lambda: InvalidInput("bad tensor"), id="invalid-input"),
    pytest.param(lambda: ModelNotReady("m"), id="model-not-ready"),
    pytest.param(lambda: RuntimeError("bug"), id="runtime-error"),
]


class Sleeps:
    """The injected sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """A handler that raises `errors` in turn, then answers `result`."""

    def __init__(self, *errors: BaseException, result: Any = "ok") -> None:
        self.errors = list(errors)
        self.result = result

    def __call__(self, payload: Any, headers: Headers) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class Failing(Flaky):
    """Raises the same `error` object on every call."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def __call__(self, payload: Any, headers: Headers) -> Any:
        raise self.error


def attempts(hop: MockHop, payload: Any = None) -> list[int]:
    """The attempt number of each call `hop` received (of `payload`'s calls, if given)."""
    return [c.attempt for c in hop.calls if payload is None or c.payload == payload]


def retrying(
    handler: Any, policy: RetryPolicy = POLICY, **kwargs: Any
) -> tuple[Retrying, MockHop, Sleeps]:
    hop = MockHop(handler)
    sleeps = Sleeps()
    kwargs.setdefault("random", lambda: 1.0)
    return Retrying(hop, policy, sleep=sleeps, **kwargs), hop, sleeps


def retried(metrics: Metrics, reason: str, model: str = "m", hop: str = "predictor") -> float:
    value = metrics.registry.get_sample_value(
        "gateway_hop_retries_total", {"model_name": model, "hop": hop, "reason": reason}
    )
    return value or 0.0


# is_retryable


@pytest.mark.parametrize("make", RETRIED)
def test_is_retryable_for_errors_where_nothing_was_done(make: Any) -> None:
    assert is_retryable(make(), POLICY)


@pytest.mark.parametrize("make", NOT_RETRIED)
def test_is_not_retryable_for_answers_and_our_own_errors(make: Any) -> None:
    assert not is_retryable(make(), POLICY)


def test_timeout_is_retryable_only_when_the_policy_says() -> None:
    assert not is_retryable(UpstreamTimeout("slow"), POLICY)
    assert is_retryable(UpstreamTimeout("slow"), TIMEOUTS_RETRIED)


def test_cancellation_is_never_retryable() -> None:
    assert not is_retryable(asyncio.CancelledError(), TIMEOUTS_RETRIED)


def test_retry_reason_is_the_status_or_the_class() -> None:
    assert retry_reason(UpstreamStatusError("busy", status=503)) == "503"
    assert retry_reason(unavailable()) == "UpstreamUnavailable"
    assert retry_reason(UpstreamTimeout("slow")) == "UpstreamTimeout"


# what is retried, and how often


@pytest.mark.parametrize("make", RETRIED)
async def test_retried_kinds_succeed_after_failures(make: Any) -> None:
    flaky = Flaky(make(), make())
    hop, inner, sleeps = retrying(flaky)
    assert await hop.infer({"instances": [1]}, {}) == "ok"
    assert len(inner.calls) == 3
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize("make", RETRIED)
async def test_retried_kinds_give_up_after_retries_with_the_last_error(make: Any) -> None:
    errors = [make() for _ in range(POLICY.retries + 1)]
    hop, inner, sleeps = retrying(Flaky(*errors))
    with pytest.raises(UpstreamError) as raised:
        await hop.infer({}, {})
    assert raised.value is errors[-1]
    assert len(inner.calls) == POLICY.retries + 1
    assert len(sleeps.waits) == POLICY.retries


@pytest.mark.parametrize("make", NOT_RETRIED)
async def test_other_kinds_are_raised_at_once_as_they_are(make: Any) -> None:
    error = make()
    hop, inner, sleeps = retrying(Failing(error))
    with pytest.raises(type(error)) as raised:
        await hop.infer({}, {})
    assert raised.value is error
    assert len(inner.calls) == 1
    assert sleeps.waits == []


async def test_timeouts_are_retried_when_asked_for() -> None:
    hop, inner, _ = retrying(Flaky(UpstreamTimeout("slow")), TIMEOUTS_RETRIED)
    assert await hop.infer({}, {}) == "ok"
    assert len(inner.calls) == 2


async def test_a_non_retryable_error_after_a_retry_ends_the_loop() -> None:
    final = UpstreamStatusError("bad", status=400)
    hop, inner, _ = retrying(Flaky(unavailable(), final, unavailable()))
    with pytest.raises(UpstreamStatusError) as raised:
        await hop.infer({}, {})
    assert raised.value is final
    assert len(inner.calls) == 2


async def test_every_attempt_sends_the_same_payload_and_headers() -> None:
    hop, inner, _ = retrying(Flaky(unavailable(), unavailable()))
    payload = {"instances": [[1, 2]]}
    await hop.infer(payload, {"x-request-id": "r1"})
    assert [call.payload for call in inner.calls] == [payload] * 3
    assert [call.headers for call in inner.calls] == [{"x-request-id": "r1"}] * 3


async def test_passthrough_bodies_are_resent_unchanged() -> None:
    body = Passthrough(protocol="v2", model_name="m", body=b'{"inputs":[]}')
    hop, inner, _ = retrying(Flaky(UpstreamStatusError("busy", status=503)))
    assert await hop.infer(body, {}) == "ok"
    assert [call.payload for call in inner.calls] == [body, body]


async def test_explain_is_retried_too() -> None:
    flaky = Flaky(unavailable(), result={"explanations": []})
    inner = MockHop(explain_handler=flaky)
    hop = Retrying(inner, POLICY, sleep=Sleeps())
    assert await hop.explain({}, {}) == {"explanations": []}
    assert attempts(inner) == [1, 2]
    assert {call.method for call in inner.calls} == {"explain"}


class Probe(MockHop):
    """Counts readiness probes, which fail as an unreachable upstream would."""

    def __init__(self) -> None:
        super().__init__()
        self.probes = 0

    async def ready(self, model_name: str | None = None) -> bool:
        self.probes += 1
        raise unavailable()


async def test_ready_and_aclose_are_not_retried() -> None:
    probe = Probe()
    hop = Retrying(probe, POLICY, sleep=Sleeps())
    with pytest.raises(UpstreamUnavailable):
        await hop.ready("m")
    assert probe.probes == 1
    await hop.aclose()
    assert probe.closed


async def test_without_retries_the_inner_hop_is_called_once() -> None:
    flaky = Flaky(unavailable())
    hop, inner, sleeps = retrying(flaky, RetryPolicy(retries=0))
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    assert len(inner.calls) == 1
    assert sleeps.waits == []
    assert attempts(inner) == [1]
    assert await hop.infer({}, {}) == "ok"


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        Retrying(MockHop(), RetryPolicy(retries=-1))


def test_wrapper_keeps_the_inner_hops_name_and_protocol() -> None:
    hop = Retrying(MockHop(name="explainer", protocol="grpc-v2"), POLICY)
    assert (hop.name, hop.protocol) == ("explainer", "grpc-v2")


# the attempt number


async def test_the_inner_hop_sees_attempts_1_2_3() -> None:
    flaky = Flaky(unavailable(), unavailable())
    hop, inner, _ = retrying(flaky)
    await hop.infer({}, {})
    assert attempts(inner) == [1, 2, 3]


async def test_the_attempt_number_does_not_leak_to_the_next_call() -> None:
    hop, inner, _ = retrying(Flaky(unavailable(), unavailable()))
    await hop.infer({}, {})
    await hop.infer({}, {})
    assert attempts(inner) == [1, 2, 3, 1]


async def test_concurrent_calls_count_their_own_attempts() -> None:
    async def yielding(seconds: float) -> None:
        await asyncio.sleep(0)

    first = Flaky(unavailable(), unavailable(), result="first")
    second = Flaky(unavailable(), result="second")

    def handler(payload: Any, headers: Headers) -> Any:
        return (first if payload == 1 else second)(payload, headers)

    inner = MockHop(handler)
    hop = Retrying(inner, POLICY, sleep=yielding)
    results = await asyncio.gather(hop.infer(1, {}), hop.infer(2, {}))
    assert list(results) == ["first", "second"]
    assert attempts(inner, 1) == [1, 2, 3]
    assert attempts(inner, 2) == [1, 2]


# waits


async def test_waits_grow_exponentially_up_to_backoff_max() -> None:
    policy = RetryPolicy(retries=5, backoff_initial=0.1, backoff_max=0.5)
    hop, _, sleeps = retrying(Failing(unavailable()), policy)
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    assert sleeps.waits == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


async def test_waits_are_the_ceiling_scaled_by_the_random_draw() -> None:
    # The wait is drawn before the stop is asked, so the last failure draws one too.
    draws = iter([0.0, 0.5, 0.25, 1.0])
    hop, _, sleeps = retrying(Failing(unavailable()), random=lambda: next(draws))
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    # Ceilings 0.1, 0.2, 0.4: full jitter may go all the way down to no wait at all.
    assert sleeps.waits == pytest.approx([0.0, 0.1, 0.1])


async def test_jittered_waits_stay_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(retries=8, backoff_initial=0.05, backoff_max=2.0)
    hop, _, sleeps = retrying(Failing(unavailable()), policy, random=random.Random(7).random)
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    ceilings = [min(0.05 * 2**n, 2.0) for n in range(8)]
    assert len(sleeps.waits) == 8
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleeps.waits, ceilings, strict=True))
    assert len(set(sleeps.waits)) == 8


async def test_retry_after_is_waited_when_longer_than_the_backoff() -> None:
    busy = UpstreamStatusError("busy", status=503, retry_after=1.5)
    hop, _, sleeps = retrying(Flaky(busy, unavailable()))
    assert await hop.infer({}, {}) == "ok"
    assert sleeps.waits == pytest.approx([1.5, 0.2])


async def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    busy = UpstreamStatusError("busy", status=503, retry_after=0.01)
    hop, _, sleeps = retrying(Flaky(busy))
    await hop.infer({}, {})
    assert sleeps.waits == pytest.approx([0.1])


# the deadline


@pytest.fixture
def request_with_deadline() -> Iterator[RequestContext]:
    context = RequestContext("r1", "v2", deadline=time.monotonic() + 0.5)
    with serving(context):
        yield context


def elapsing(context: RequestContext, sleeps: Sleeps) -> Any:
    """A sleep that moves the deadline closer by what it 'slept', as time passing would."""

    async def sleep(seconds: float) -> None:
        await sleeps(seconds)
        assert context.deadline is not None
        context.deadline -= seconds

    return sleep


async def test_a_wait_past_the_deadline_is_not_taken(
    request_with_deadline: RequestContext,
) -> None:
    errors = [UpstreamStatusError("busy", status=503) for _ in range(11)]
    sleeps = Sleeps()
    inner = MockHop(Flaky(*errors))
    policy = RetryPolicy(retries=10, backoff_initial=0.1, backoff_max=10.0)
    hop = Retrying(inner, policy, sleep=elapsing(request_with_deadline, sleeps), random=lambda: 1)
    with pytest.raises(UpstreamStatusError) as raised:
        await hop.infer({}, {})
    # 0.1 and 0.2 fit in the 0.5 s left; after them 0.4 would not fit in the 0.2 s left.
    assert sleeps.waits == pytest.approx([0.1, 0.2])
    assert len(inner.calls) == 3
    assert raised.value is errors[2]


async def test_a_retry_after_past_the_deadline_goes_back_to_the_client(
    request_with_deadline: RequestContext,
) -> None:
    busy = UpstreamStatusError("busy", status=503, retry_after=5)
    hop, inner, sleeps = retrying(Failing(busy))
    with pytest.raises(UpstreamStatusError) as raised:
        await hop.infer({}, {})
    assert raised.value is busy
    assert raised.value.retry_after == 5
    assert len(inner.calls) == 1
    assert sleeps.waits == []


async def test_no_retry_once_the_deadline_has_passed() -> None:
    hop, inner, _ = retrying(Failing(unavailable()))
    past = RequestContext("r1", "v2", deadline=time.monotonic() - 1)
    with serving(past), pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    assert len(inner.calls) == 1


async def test_a_request_without_deadline_is_limited_by_retries_only() -> None:
    # Three hour-long waits: this test returning at all shows the injected sleep is used.
    slow = UpstreamStatusError("busy", status=503, retry_after=3600)
    hop, inner, sleeps = retrying(Failing(slow))
    with serving(RequestContext("r1", "v2", deadline=None)), pytest.raises(UpstreamStatusError):
        await hop.infer({}, {})
    assert len(inner.calls) == POLICY.retries + 1
    assert sleeps.waits == [3600] * POLICY.retries


async def test_the_budget_caps_retries_of_a_request_without_deadline() -> None:
    # The hop's timeout is the budget: an hour's Retry-After does not fit in 10 s.
    slow = UpstreamStatusError("busy", status=503, retry_after=3600)
    budgeted = RetryPolicy(retries=3, budget=10.0)
    hop, inner, sleeps = retrying(Failing(slow), budgeted)
    with serving(RequestContext("r1", "v2", deadline=None)), pytest.raises(UpstreamStatusError):
        await hop.infer({}, {})
    assert len(inner.calls) == 1
    assert sleeps.waits == []


async def test_waits_within_the_budget_are_taken() -> None:
    budgeted = RetryPolicy(retries=2, backoff_initial=0.1, backoff_max=1.0, budget=10.0)
    hop, inner, sleeps = retrying(Flaky(unavailable(), unavailable()), budgeted)
    await hop.infer({}, {})
    assert len(inner.calls) == 3
    assert len(sleeps.waits) == 2


# what a retry reports


async def test_each_retry_counts_once_with_its_reason() -> None:
    metrics = Metrics()
    flaky = Flaky(UpstreamStatusError("busy", status=503), unavailable())
    hop, _, _ = retrying(flaky, metrics=metrics, model_name="m")
    await hop.infer({}, {})
    assert retried(metrics, "503") == 1
    assert retried(metrics, "UpstreamUnavailable") == 1
    assert metrics.hop_retries.labels("m", "predictor", "503")._value.get() == 1


async def test_the_last_failure_is_not_counted_as_a_retry() -> None:
    metrics = Metrics()
    hop, inner, _ = retrying(Failing(unavailable()), metrics=metrics, model_name="m")
    with pytest.raises(UpstreamUnavailable):
        await hop.infer({}, {})
    assert len(inner.calls) == 4
    assert retried(metrics, "UpstreamUnavailable") == 3


async def test_errors_not_retried_are_not_counted() -> None:
    metrics = Metrics()
    hop, _, _ = retrying(Failing(UpstreamStatusError("bad", status=400)), metrics=metrics)
    with pytest.raises(UpstreamStatusError):
        await hop.infer({}, {})
    assert retried(metrics, "400", model="") == 0


async def test_each_retry_is_an_event_on_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    hop, _, _ = retrying(Flaky(UpstreamStatusError("busy", status=503), unavailable()))
    with tracer.start_as_current_span("predict"):
        await hop.infer({}, {})
    (span,) = exporter.get_finished_spans()
    events = [(event.name, dict(event.attributes or {})) for event in span.events]
    assert events == [
        ("retry", {"attempt": 1, "reason": "503", "wait_seconds": pytest.approx(0.1)}),
        ("retry", {"attempt": 2, "reason": "UpstreamUnavailable", "wait_seconds": 0.2}),
    ]
    provider.shutdown()


# a real flaky upstream


class Upstream:
    """A v2 predictor on 127.0.0.1 that answers 503 `failures` times, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[bytes] = []

    async def infer(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        if len(self.bodies) <= self.failures:
            return web.json_response({"error": "warming up"}, status=503)
        answer = {
            "model_name": request.match_info["model"],
            "id": "r1",
            "outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]}],
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, TestServer]]:
    state = Upstream(failures=2)
    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", state.infer)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield state, server
    finally:
        await server.close()


def transport(server: TestServer) -> Hop:
    host = f"{server.host}:{server.port}"
    return RestHop(HopSettings(role="predictor", host=host, model_name="m", protocol="v2"))


async def test_a_flaky_upstream_answers_on_the_third_attempt(
    upstream: tuple[Upstream, TestServer],
) -> None:
    state, server = upstream
    metrics = Metrics()
    sleeps = Sleeps()
    request = InferRequest("m", [InferInput("x", [2], "FP32", data=[1.0, 2.0])], request_id="r1")
    async with Retrying(
        transport(server), POLICY, metrics=metrics, model_name="m", sleep=sleeps
    ) as hop:
        response = await hop.infer(request, {})
    assert isinstance(response, InferResponse)
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), np.array([1.5, 2.5], "f4"))
    assert len(state.bodies) == 3
    assert state.bodies[0] == state.bodies[1] == state.bodies[2]
    assert len(sleeps.waits) == 2
    assert retried(metrics, "503") == 2
