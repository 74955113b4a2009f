"""Names to addresses: the system's resolver, a table for tests, and `EndpointSet`, which
keeps a target's endpoints fresh.

A name is resolved again every `refresh_interval`, so replicas that a headless Service gains
or loses are picked up without a restart. A name that fails to resolve (or takes longer
than `resolve_timeout`) keeps the addresses it had: a DNS hiccup must not empty a pool of
replicas that are still there. When a name has both IPv4 and IPv6 addresses only the IPv4
ones are used: a dual-stack Service lists each pod once per family, and counting a pod
twice would give it twice the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from gateway.hops.pool.target import Endpoint, HostPort, PoolTarget

__all__ = ["EndpointSet", "Resolver", "StaticResolver", "SystemResolver"]

logger = logging.getLogger("gateway.hops.pool")


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The IP addresses of `host`; raises OSError when it has none."""
        ...


class SystemResolver:
    """The operating system's resolver (``/etc/hosts``, then DNS), in the loop's executor."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        by_family: dict[int, list[str]] = {socket.AF_INET: [], socket.AF_INET6: []}
        for family, _, _, _, sockaddr in infos:
            addresses = by_family.get(family)
            address = str(sockaddr[0])
            if addresses is not None and address not in addresses:
                addresses.append(address)
        return by_family[socket.AF_INET] or by_family[socket.AF_INET6]


class StaticResolver:
    """Answers from a table the caller edits (`set`), never from the network: for tests, and
    for a name whose addresses are known in advance."""

    def __init__(self, table: Mapping[str, Iterable[str]] | None = None) -> None:
        self.table = {name: list(addresses) for name, addresses in (table or {}).items()}
        self.asked = 0

    def set(self, name: str, addresses: Iterable[str]) -> None:
        self.table[name] = list(addresses)

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.asked += 1
        addresses = self.table.get(host)
        if not addresses:
            raise OSError(f"{host} has no addresses")
        return list(addresses)


class EndpointSet:
    """The endpoints of a target, resolved by `resolver`; `on_change` hears each new set.

    Entries written as IP literals are endpoints from the start; names once `refresh` (or
    `start`) has resolved them."""

    def __init__(
        self,
        target: PoolTarget,
        *,
        on_change: Callable[[tuple[Endpoint, ...]], None],
        resolver: Resolver | None = None,
        refresh_interval: float = 5.0,
        resolve_timeout: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        role: str = "upstream",
    ) -> None:
        if refresh_interval <= 0 or resolve_timeout <= 0:
            raise ValueError("refresh_interval and resolve_timeout must be more than 0")
        self.target = target
        self.resolver: Resolver = resolver or SystemResolver()
        self.refresh_interval = refresh_interval
        self.resolve_timeout = resolve_timeout
        self.role = role
        self._on_change = on_change
        self._sleep = sleep
        self._names = [entry for entry in target.entries if not entry.is_ip]
        self._addresses: dict[HostPort, tuple[str, ...]] = {
            entry: (entry.host,) for entry in target.entries if entry.is_ip
        }
        self._failing: set[HostPort] = set()
        self._task: asyncio.Task[None] | None = None
        self.endpoints = self._current()

    @property
    def resolves(self) -> bool:
        """Whether any entry is a name (so that there is something to refresh)."""
        return bool(self._names)

    async def refresh(self) -> None:
        """Resolve every name once (at the same time), and tell `on_change` if the set moved."""
        results = await asyncio.gather(*(self._resolve(entry) for entry in self._names))
        for entry, addresses in zip(self._names, results, strict=True):
            if addresses is not None:
                self._addresses[entry] = addresses
        endpoints = self._current()
        if set(endpoints) != set(self.endpoints):
            old, new = set(self.endpoints), set(endpoints)
            logger.info(
                "%s endpoints: %d (added %s; removed %s)",
                self.role,
                len(endpoints),
                ", ".join(str(e) for e in endpoints if e not in old) or "none",
                ", ".join(str(e) for e in self.endpoints if e not in new) or "none",
            )
            self.endpoints = endpoints
            self._on_change(endpoints)

    def start(self) -> None:
        """Refresh every `refresh_interval` from now on, in a task of the running loop."""
        if self._task is None and self._names:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._sleep(self.refresh_interval)
            await self.refresh()

    async def _resolve(self, entry: HostPort) -> tuple[str, ...] | None:
        try:
            addresses = await asyncio.wait_for(
                self.resolver.resolve(entry.host, entry.port), self.resolve_timeout
            )
            if not addresses:
                raise OSError(f"{entry.host} has no addresses")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to resolve keeps the old addresses
            if entry not in self._failing:
                self._failing.add(entry)
                logger.warning(
                    "%s: cannot resolve %s (%r); keeping its %d address(es)",
                    self.role,
                    entry,
                    exc,
                    len(self._addresses.get(entry, ())),
                )
            return None
        self._failing.discard(entry)
        return tuple(addresses)

    def _current(self) -> tuple[Endpoint, ...]:
        endpoints: dict[Endpoint, None] = {}
        for entry in self.target.entries:
            for address in self._addresses.get(entry, ()):
                endpoints[Endpoint(entry.host, address, entry.port)] = None
        return tuple(endpoints)
