"""Where a step's service is: its URL read into what a hop needs, as a plain value.

The URL forms are those KServe's controller writes into a step's ``serviceUrl`` (and that a
``--service NAME=URL`` gives for a ``serviceName``), plus a ``grpc://`` scheme::

    http://HOST[:PORT]/v1/models/NAME:predict                  REST v1
    http://HOST[:PORT]/v2/models/NAME[/versions/V]/infer       REST v2 (JSON or binary)
    grpc://HOST[:PORT]/NAME   grpc://HOST[:PORT]/v2/models/NAME[/versions/V][/infer]   gRPC v2

``https`` and ``grpcs`` mean TLS. HOST[:PORT] may be a pool of replicas,
``HOST:PORT,HOST:PORT`` (`gateway.hops.pool`), as ``--predictor_host`` may. A URL that names
no model (a bare host, which KServe's router would POST to as it is) is refused: every hop of
ours speaks a protocol to a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from gateway.hops.pool import PoolTargetError, parse_target

__all__ = ["StepTarget", "parse_service_url", "resolve_service"]

_SCHEMES = {"http": ("rest", False), "https": ("rest", True), "grpc": ("grpc", False),
            "grpcs": ("grpc", True)}  # fmt: skip
_V1 = re.compile(r"/v1/models/(?P<name>[^/:]+):predict")
_V2 = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
_GRPC_V2 = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/infer)?")
_GRPC_NAME = re.compile(r"/(?P<name>[^/]+)")

FORMS = (
    "http[s]://HOST[:PORT]/v1/models/NAME:predict, http[s]://HOST[:PORT]/v2/models/NAME/infer "
    "or grpc[s]://HOST[:PORT]/NAME"
)


@dataclass(frozen=True)
class StepTarget:
    """A service a step calls: enough to build its hop."""

    url: str
    # "v1", "v2" or "grpc-v2", as `gateway.hops` names them.
    protocol: str
    # host:port (the scheme's default port when the URL gives none); several, comma
    # separated, for a pool of replicas.
    host: str
    model_name: str
    model_version: str | None = None
    use_ssl: bool = False


def parse_service_url(url: str) -> StepTarget:
    """The target of `url`; ValueError (naming the URL) for one we cannot call."""
    try:
        parts = urlsplit(url.strip())
        # A pool's entries are read below; the URL's own checks need one host.
        pool = parts.netloc if "," in parts.netloc else None
        if pool is not None:
            parts = parts._replace(netloc=pool.split(",", 1)[0])
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"service URL {url!r} is malformed: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"service URL {url!r} is not one of {FORMS}")
    if parts.query or parts.fragment:
        raise ValueError(f"service URL {url!r} has a query or fragment, which no hop sends")
    kind, tls = scheme
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    address = f"{host}:{port if port is not None else (443 if tls else 80)}"
    if pool is not None:
        try:
            entries = parse_target(pool, default_port=443 if tls else 80).entries
        except PoolTargetError as exc:
            raise ValueError(f"service URL {url!r}: {exc}") from None
        address = ",".join(str(entry) for entry in entries)
    path = parts.path.rstrip("/") if kind == "grpc" else parts.path
    if kind == "rest":
        for protocol, pattern in (("v1", _V1), ("v2", _V2)):
            match = pattern.fullmatch(path)
            if match:
                return _target(url, protocol, address, match, tls)
    else:
        match = _GRPC_V2.fullmatch(path) or _GRPC_NAME.fullmatch(path)
        if match:
            return _target(url, "grpc-v2", address, match, tls)
    raise ValueError(f"service URL {url!r} names no model: use {FORMS}")


def _target(url: str, protocol: str, address: str, match: re.Match[str], tls: bool) -> StepTarget:
    version = match.groupdict().get("version")
    return StepTarget(
        url=url,
        protocol=protocol,
        host=address,
        model_name=unquote(match["name"]),
        model_version=unquote(version) if version else None,
        use_ssl=tls,
    )


def resolve_service(name: str, services: Mapping[str, str]) -> StepTarget:
    """The target of the service called `name`, from NAME -> URL (``--service NAME=URL``)."""
    url = services.get(name)
    if url is None:
        known = ", ".join(sorted(services)) or "none"
        raise ValueError(f"no URL for service {name!r} (services known: {known})")
    return parse_service_url(url)
