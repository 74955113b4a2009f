"""The one error table: every class has an HTTP status and a gRPC code, and they agree."""

from __future__ import annotations

import grpc
import pytest

from gateway import errors
from gateway.errors import (
    GRPC_FOR_HTTP,
    HTTP_FOR_GRPC,
    STATUS,
    GatewayError,
    InvalidInput,
    UpstreamStatusError,
    grpc_code,
    http_status,
)

ALL_CLASSES = [
    obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, GatewayError)
]


def test_every_class_is_in_the_table() -> None:
    missing = [
        cls.__name__ for cls in ALL_CLASSES if cls not in STATUS and cls is not UpstreamStatusError
    ]
    assert missing == []


def test_docstring_draws_every_class_with_its_status() -> None:
    doc = errors.__doc__ or ""
    for cls, (status, code) in STATUS.items():
        line = next((line for line in doc.splitlines() if f" {cls.__name__} " in line), None)
        assert line is not None, cls.__name__
        assert str(status) in line, line
        assert code.name in line, line


def test_invalid_input_is_a_value_error() -> None:
    assert issubclass(InvalidInput, ValueError)
    assert http_status(InvalidInput("x")) == 400
    assert grpc_code(InvalidInput("x")) is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503, 504, 418])
def test_upstream_status_passes_through(status: int) -> None:
    exc = UpstreamStatusError("busy", status=status, retry_after=2.0)
    assert http_status(exc) == status
    assert grpc_code(exc) is GRPC_FOR_HTTP.get(status, grpc.StatusCode.FAILED_PRECONDITION)
    assert exc.retry_after == 2.0


def test_upstream_grpc_code_is_kept() -> None:
    exc = UpstreamStatusError("gone", status=404, code=grpc.StatusCode.NOT_FOUND)
    assert grpc_code(exc) is grpc.StatusCode.NOT_FOUND


def test_translation_tables_agree_where_both_are_defined() -> None:
    for code, status in HTTP_FOR_GRPC.items():
        if status in GRPC_FOR_HTTP and code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        ):
            assert GRPC_FOR_HTTP[status] is code
