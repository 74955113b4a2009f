"""Names to endpoints, kept fresh: changes picked up, failures keep what was known, every
wait bounded, the loop cancelled on close. No network: a table resolver, or /etc/hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.hops.pool import Endpoint, StaticResolver, SystemResolver, parse_target
from gateway.hops.pool.resolve import EndpointSet

from .support import Ticker


def endpoint_set(
    text: str, resolver: StaticResolver | None = None, **kwargs: object
) -> tuple[EndpointSet, list[tuple[Endpoint, ...]]]:
    changes: list[tuple[Endpoint, ...]] = []
    endpoints = EndpointSet(
        parse_target(text, default_port=80),
        on_change=changes.append,
        resolver=resolver or StaticResolver(),
        **kwargs,  # type: ignore[arg-type]
    )
    return endpoints, changes


def addresses(endpoints: EndpointSet) -> list[str]:
    return [endpoint.hostport for endpoint in endpoints.endpoints]


async def test_ip_literals_are_endpoints_from_the_start_and_never_resolved() -> None:
    resolver = StaticResolver()
    endpoints, changes = endpoint_set("10.0.0.1:1,[::1]:2", resolver)
    assert addresses(endpoints) == ["10.0.0.1:1", "[::1]:2"]
    assert not endpoints.resolves
    await endpoints.refresh()
    endpoints.start()  # nothing to refresh: no task
    await endpoints.aclose()
    assert resolver.asked == 0
    assert changes == []


async def test_a_name_becomes_one_endpoint_per_address_and_follows_changes() -> None:
    resolver = StaticResolver({"svc": ["10.0.0.1", "10.0.0.2"]})
    endpoints, changes = endpoint_set("svc:8080,10.9.9.9:7", resolver)
    assert addresses(endpoints) == ["10.9.9.9:7"]
    await endpoints.refresh()
    assert addresses(endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.9.9.9:7"]
    assert endpoints.endpoints[0] == Endpoint("svc", "10.0.0.1", 8080)
    resolver.set("svc", ["10.0.0.2", "10.0.0.3"])
    await endpoints.refresh()
    assert addresses(endpoints) == ["10.0.0.2:8080", "10.0.0.3:8080", "10.9.9.9:7"]
    await endpoints.refresh()  # no change, no call
    assert len(changes) == 2


async def test_a_name_that_stops_resolving_keeps_its_addresses() -> None:
    resolver = StaticResolver({"svc": ["10.0.0.1"]})
    endpoints, changes = endpoint_set("svc:80", resolver)
    await endpoints.refresh()
    resolver.set("svc", [])
    await endpoints.refresh()
    assert addresses(endpoints) == ["10.0.0.1:80"]
    assert len(changes) == 1


async def test_a_resolver_that_hangs_is_given_up_on() -> None:
    class Hanging:
        async def resolve(self, host: str, port: int) -> Sequence[str]:
            await asyncio.Event().wait()
            return []

    endpoints = EndpointSet(
        parse_target("svc:80", default_port=80),
        on_change=lambda _: None,
        resolver=Hanging(),
        resolve_timeout=0.01,
    )
    await asyncio.wait_for(endpoints.refresh(), 5)
    assert endpoints.endpoints == ()


async def test_the_loop_refreshes_every_interval_until_closed() -> None:
    resolver, ticker = StaticResolver({"svc": ["10.0.0.1"]}), Ticker()
    endpoints, changes = endpoint_set("svc:80", resolver, refresh_interval=3.0, sleep=ticker.sleep)
    endpoints.start()
    await ticker.tick()
    assert addresses(endpoints) == ["10.0.0.1:80"]
    resolver.set("svc", ["10.0.0.1", "10.0.0.5"])
    await ticker.tick()
    assert addresses(endpoints) == ["10.0.0.1:80", "10.0.0.5:80"]
    assert ticker.asked == [3.0, 3.0, 3.0]
    assert len(changes) == 2
    task = endpoints._task
    await endpoints.aclose()
    assert task is not None
    assert task.cancelled()


async def test_the_system_resolver_reads_the_hosts_file_and_prefers_ipv4() -> None:
    resolver = SystemResolver()
    assert await resolver.resolve("localhost", 80) == ["127.0.0.1"]
    assert await resolver.resolve("::1", 80) == ["::1"]


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="refresh_interval"):
        endpoint_set("svc", refresh_interval=0)
