"""What a server checks before it starts, so that a setting that cannot work stops the start
with one line naming the flag, instead of a traceback or a server that fails every request.

`StartupError` is that line. `ModelServer.start` prints it as ``gateway: error: ...`` and
exits with status 2, as argparse does for a bad flag.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from gateway.hops.pool.target import PoolTargetError, parse_target
from gateway.hops.settings import HopSettings
from gateway.settings import ServerSettings

__all__ = [
    "StartupError",
    "bind_error",
    "check",
    "check_host",
    "check_port_free",
    "check_ports_free",
    "refuse",
]


class StartupError(Exception):
    """The server cannot start as configured; the message says why in one line."""


def check(
    settings: ServerSettings, options: Mapping[str, Any], upstreams: tuple[HopSettings, ...]
) -> None:
    """Refuse settings that cannot work together (raises `StartupError`)."""
    for flag, port in (("--http_port", settings.http_port), ("--grpc_port", settings.grpc_port)):
        if not 0 <= port <= 65535:
            raise StartupError(f"{flag} {port} is not a port: use 1-65535 (0: any free port)")
    if settings.enable_grpc and settings.http_port == settings.grpc_port != 0:
        raise StartupError(
            f"--http_port and --grpc_port are both {settings.http_port}: "
            "give each server a port of its own"
        )
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if bool(certfile) != bool(keyfile):
        given, missing = ("--ssl_certfile", "--ssl_keyfile") if certfile else (
            "--ssl_keyfile", "--ssl_certfile")  # fmt: skip
        raise StartupError(f"{given} needs {missing} too: serving HTTPS takes both")
    for hop in upstreams:
        if hop.host:
            flag = "--predictor_shadow_host" if hop.role == "shadow" else f"--{hop.role}_host"
            check_host(flag, hop.host)
    predictor = next((hop for hop in upstreams if hop.role == "predictor"), None)
    if predictor is not None and predictor.ca_file and not _tls(predictor):
        raise StartupError(
            "--predictor_ca_file is read only for TLS: add --predictor_use_ssl true "
            "(or give an https:// host)"
        )


def _tls(hop: HopSettings) -> bool:
    return hop.use_ssl or hop.host.lower().startswith("https://")


def check_host(flag: str, value: str) -> None:
    """Refuse a host that is not ``HOST[:PORT]`` (a scheme may lead it, as KServe allows), or
    several separated by commas (a pool)."""
    try:
        parse_target(value, default_port=80)
    except PoolTargetError as exc:
        raise StartupError(f"{flag} {value!r} is not HOST:PORT ({exc.reason})") from None


def check_ports_free(settings: ServerSettings) -> None:
    """Bind each configured port once and let it go: for `--workers`, whose parent binds
    before any server (so the worker's own errors would come too late to read)."""
    ports = [("REST", "--http_port", settings.http_port)]
    if settings.enable_grpc:
        ports.append(("gRPC", "--grpc_port", settings.grpc_port))
    for what, flag, port in ports:
        check_port_free(what, flag, settings.listen_address, port)


def check_port_free(what: str, flag: str, address: str, port: int) -> None:
    """Bind `address`:`port` once and let it go (port 0: nothing to check); raises the one
    line of `bind_error`. gRPC's own failed bind logs lines of its own first: probing spares
    them."""
    if port == 0:
        return
    try:
        _probe(address, port)
    except OSError as exc:
        raise bind_error(what, flag, address, port, exc) from None


def bind_error(what: str, flag: str, address: str, port: int, exc: BaseException) -> StartupError:
    """The one line for a server (`what`: REST or gRPC) that could not listen on
    `address`:`port`. gRPC reports only that it failed: the port is then probed to say why."""
    reason = _errno(exc)
    if reason is None:
        try:
            _probe(address, port)
        except OSError as probe_exc:
            reason = _errno(probe_exc)
    if reason == errno.EADDRINUSE:
        return StartupError(
            f"{what} port {port} is already in use on {address}: stop what listens there, "
            f"or pick another port with {flag}"
        )
    if reason in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return StartupError(
            f"cannot listen on {address}: it is not an address of this machine "
            "(--listen_address; 0.0.0.0 listens on all)"
        )
    if reason == errno.EACCES:
        return StartupError(
            f"{what} port {port} needs privileges to listen on: pick one above 1023 with {flag}"
        )
    return StartupError(f"{what} cannot listen on {address}:{port} ({flag}): {exc}")


def _errno(exc: BaseException) -> int | None:
    return exc.errno if isinstance(exc, OSError) and exc.errno else None


def _probe(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port left in TIME_WAIT by a stopped server is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))


def refuse(exc: StartupError) -> NoReturn:
    """Stop the start with `exc`'s one line, as argparse stops at a bad flag."""
    for handler in logging.getLogger().handlers:
        handler.flush()  # what was logged before it comes first
    print(f"gateway: error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2)
