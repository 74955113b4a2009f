"""TLS for both doors from one certificate (``--ssl_certfile`` / ``--ssl_keyfile``): both
ports use it or neither does."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import grpc

__all__ = ["grpc_credentials", "ssl_context"]


def _files(options: Mapping[str, Any]) -> tuple[str, str] | None:
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    return (certfile, keyfile) if certfile and keyfile else None


def ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The REST port's context; None without both files."""
    files = _files(options)
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files)
    return context


def grpc_credentials(options: Mapping[str, Any]) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials, from the same files; None without both."""
    files = _files(options)
    if files is None:
        return None
    certfile, keyfile = files
    with open(keyfile, "rb") as key, open(certfile, "rb") as chain:
        return grpc.ssl_server_credentials([(key.read(), chain.read())])
