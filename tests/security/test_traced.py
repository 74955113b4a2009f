"""With tracing on: hostile trace context (``traceparent``, ``tracestate``, ``baggage``) on
REST and gRPC is no server error, and the ``/traces`` page (``--trace_buffer``) escapes what
clients put into spans (paths, model names), so it cannot carry a script to an operator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import tracing
from gateway._proto import pb
from gateway.settings import ServerSettings
from gateway.tracing import TracingSettings
from tests.models import EchoModel
from tests.security.harness import (
    GOOD_V2,
    HOST,
    Gateway,
    check_answer,
    check_code,
    fuzzing,
)
from tests.security.strategies import header_text, segment

MARKER = "<script>x-marker</script>"
trace_headers = st.fixed_dictionaries(
    {},
    optional={
        "traceparent": header_text
        | st.sampled_from(
            ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
             "00-00000000000000000000000000000000-0000000000000000-01",
             "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
             "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"]
        ),
        "tracestate": header_text | st.just("a=" + "x" * 300 + ",b=2," * 40),
        "baggage": header_text | st.just(",".join(f"k{i}=v{i}" for i in range(200))),
    },
)  # fmt: skip


@pytest.fixture(scope="module")
def traced() -> Iterator[Gateway]:
    spans = tracing.recent_spans(50)
    assert spans is not None
    provider = tracing.tracer_provider(TracingSettings(service_name="hostile"), [spans])
    assert provider is not None
    server = Gateway(
        ServerSettings(listen_address=HOST),
        [EchoModel()],
        tracer=provider.get_tracer("test"),
        recent_spans=spans,
    ).start()
    try:
        yield server
    finally:
        server.stop()
        provider.shutdown()


@fuzzing(2)
@given(trace_headers, st.sampled_from(["echo", MARKER]))
@example({"baggage": MARKER, "traceparent": MARKER}, MARKER)
def test_hostile_trace_context(traced: Gateway, headers: dict[str, str], model: str) -> None:
    path = f"/v2/models/{segment(model)}/infer"
    check_answer(traced.http("POST", path, json.dumps(GOOD_V2).encode(), headers))
    message = pb.ModelInferRequest(model_name=model).SerializeToString()
    metadata = [(key, value) for key, value in headers.items() if value.isascii()]
    code, details, _ = traced.grpc_call("ModelInfer", message, metadata)
    check_code(code, details)
    traced.assert_rest_serving()


def test_the_traces_page_escapes_what_clients_sent(traced: Gateway) -> None:
    path = f"/v2/models/{segment(MARKER)}/infer?{segment(MARKER)}"
    traced.http("POST", path, json.dumps(GOOD_V2).encode(), {"x-request-id": MARKER})
    traced.assert_rest_serving()
    page = traced.http("GET", "/traces")
    assert page.status == 200
    assert "x-marker" in page.body.decode()  # it is shown...
    assert MARKER.encode() not in page.body  # ...but only escaped
    assert traced.http("GET", "/traces.json").status == 200
