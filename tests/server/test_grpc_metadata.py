"""gRPC metadata in and out (server.grpc_metadata)."""

from __future__ import annotations

import time
from typing import Any

from gateway.request_context import RequestContext
from gateway.server import grpc_metadata


class Context:
    """The two things the functions read of a servicer context."""

    def __init__(self, metadata: Any = (), remaining: float | None = None) -> None:
        self.metadata = metadata
        self.remaining = remaining

    def invocation_metadata(self) -> Any:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining


def test_the_clients_metadata_as_headers_without_binary_values() -> None:
    context = Context((("X-Tenant", "a"), ("trace-bin", b"\x00"), ("x-request-id", "r")))
    assert grpc_metadata.headers(context) == {"x-tenant": "a", "x-request-id": "r"}  # type: ignore[arg-type]
    assert grpc_metadata.headers(Context(None)) == {}  # type: ignore[arg-type]


def test_the_deadline_only_when_there_is_one() -> None:
    assert grpc_metadata.deadline(Context(remaining=None)) is None  # type: ignore[arg-type]
    assert grpc_metadata.deadline(Context(remaining=1e10)) is None  # type: ignore[arg-type]
    deadline = grpc_metadata.deadline(Context(remaining=2.0))  # type: ignore[arg-type]
    assert deadline is not None
    assert 1.5 < deadline - time.monotonic() <= 2.0


def test_trailers_carry_what_grpc_can() -> None:
    context = RequestContext("r", "grpc-v2")
    assert grpc_metadata.trailers(context) == (("x-request-id", "r"),)
    context.record("predict", 0.002)
    assert grpc_metadata.trailers(context) == (
        ("x-request-id", "r"),
        ("server-timing", "predict;dur=2.000"),
    )
    context.upstream_timings.append('predictor.x;desc="caf\u00e9"')  # not ASCII: left out
    assert grpc_metadata.trailers(context) == (("x-request-id", "r"),)


def test_a_models_response_headers_that_grpc_can_carry() -> None:
    sent = {"X-Model": "v", "grpc-status": "0", "x-request-id": "mine", "bad key": "v",
            "x-text": "caf\u00e9", "x-data-bin": "v"}  # fmt: skip
    assert grpc_metadata.response_metadata(sent) == (("x-model", "v"),)
