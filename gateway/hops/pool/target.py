"""What an operator writes for a pool (``host:port,host:port``), and what it resolves to.

An entry is an IP literal (one replica) or a DNS name (as many replicas as it has addresses:
a Kubernetes headless Service). A scheme (``http://``, ``https://``) may lead the entries,
the same on each; a trailing ``/`` is allowed; a path is not.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["Endpoint", "HostPort", "PoolTarget", "PoolTargetError", "parse_target"]

SCHEMES = ("http", "https")

# RFC 1123 labels; underscores too, which some service registries hand out.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


class PoolTargetError(ValueError):
    """An entry of a pool target that cannot be read; the message names it."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"bad entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class HostPort:
    """One entry: a host as written (no brackets) and a port."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"


@dataclass(frozen=True)
class PoolTarget:
    """The entries of a pool, in the order written, and their scheme if one was given."""

    entries: tuple[HostPort, ...]
    scheme: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.scheme}://" if self.scheme else ""
        return ",".join(prefix + str(entry) for entry in self.entries)


@dataclass(frozen=True)
class Endpoint:
    """One replica: the name it was found under, the address to connect to, the port.

    `host` is what TLS verifies and what goes in the HTTP ``Host`` header; `address` is an IP
    (equal to `host` for an entry written as an IP literal)."""

    host: str
    address: str
    port: int

    @property
    def hostport(self) -> str:
        """``address:port``, where to connect (IPv6 in brackets); names the replica."""
        return f"{_bracketed(self.address)}:{self.port}"

    @property
    def authority(self) -> str:
        """``host:port``, as the operator wrote it."""
        return f"{_bracketed(self.host)}:{self.port}"

    def __str__(self) -> str:
        if self.host == self.address:
            return self.hostport
        return f"{self.authority} ({self.hostport})"


def parse_target(text: str, *, default_port: int) -> PoolTarget:
    """The entries of `text` (``host[:port]`` separated by commas); `default_port` for those
    without one. Raises `PoolTargetError` naming the first bad entry."""
    if not text.strip():
        raise PoolTargetError(text, "no host given")
    schemes: set[str | None] = set()
    entries: list[HostPort] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            raise PoolTargetError(text.strip(), "an entry between commas is empty")
        scheme, hostport = _split_scheme(entry)
        schemes.add(scheme)
        if len(schemes) > 1:
            raise PoolTargetError(entry, "every entry must have the same scheme")
        parsed = _parse_hostport(entry, hostport, default_port)
        if parsed in entries:
            raise PoolTargetError(entry, "listed twice")
        entries.append(parsed)
    return PoolTarget(tuple(entries), schemes.pop())


def _split_scheme(entry: str) -> tuple[str | None, str]:
    if "://" not in entry:
        return None, entry
    scheme, rest = entry.split("://", 1)
    if scheme.lower() not in SCHEMES:
        raise PoolTargetError(entry, f"the scheme must be one of {', '.join(SCHEMES)}")
    return scheme.lower(), rest


def _parse_hostport(entry: str, text: str, default_port: int) -> HostPort:
    text = text[:-1] if text.endswith("/") else text
    if "/" in text:
        raise PoolTargetError(entry, "a path is not allowed, only host[:port]")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise PoolTargetError(entry, "an IPv6 address needs its closing ']'")
        if rest and not rest.startswith(":"):
            raise PoolTargetError(entry, "expected ':port' after ']'")
        port_text = rest[1:] if rest else None
        if not _is_ip(host, 6):
            raise PoolTargetError(entry, f"{host!r} is not an IPv6 address")
    else:
        if text.count(":") > 1:
            raise PoolTargetError(entry, "write an IPv6 address in brackets: [addr]:port")
        host, sep, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if sep else None
        if not host or not (_is_ip(host, 4) or _NAME.fullmatch(host)) or host.isdigit():
            raise PoolTargetError(entry, f"{host!r} is not a host name or IP address")
    return HostPort(host, _port(entry, port_text, default_port))


def _port(entry: str, text: str | None, default_port: int) -> int:
    if text is None:
        return default_port
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise PoolTargetError(entry, "the port must be a number from 1 to 65535")
    return int(text)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
