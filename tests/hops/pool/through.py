"""A gateway in this process (a ModelServer configured by the flags, as ``gateway serve``
is) for the pool tests, and a REST v2 client of it that reads which replica answered."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from gateway.hops.pool import StaticResolver
from tests.e2e import support

BODY = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]}
_ids = itertools.count()


@asynccontextmanager
async def gateway(*flags: str, resolver: StaticResolver | None = None) -> AsyncIterator[str]:
    """The gateway's REST base URL, ready; `flags` as on its command line."""
    async with support.gateway("--predictor_protocol", "v2", *flags, resolver=resolver) as served:
        yield served.base_url


class Answer:
    def __init__(self, status: int, body: Any, headers: Any) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def replica(self) -> str | None:
        if self.status != 200:
            return None
        return str(self.body["outputs"][0]["data"][0])


async def infer(session: aiohttp.ClientSession, base: str) -> Answer:
    headers = {"x-request-id": f"r{next(_ids)}"}
    async with session.post(f"{base}/v2/models/m/infer", json=BODY, headers=headers) as r:
        return Answer(r.status, await r.json(content_type=None), r.headers)


async def send(base: str, count: int, concurrency: int) -> list[Answer]:
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> Answer:
            async with limit:
                return await infer(session, base)

        return await asyncio.gather(*(one() for _ in range(count)))


async def metrics(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        return await r.text()


# Round robin over a pool with a dead replica (never ejected): some requests fail on it first
# and are answered by another; each attempt's span is to name its own replica.
TRACED_ROUND_ROBIN = (
    "--balancer", "round_robin", "--outlier_consecutive_failures", "0",
    "--predictor_request_retries", "2", "--trace_buffer", "20",
)  # fmt: skip

# An attempt as its CLIENT span tells it: the replica (``address:port``), and whether it failed.
Attempt = tuple[str, bool]


async def traced_requests(base: str, count: int) -> tuple[list[Answer], list[list[Attempt]], str]:
    """`count` requests one after another; then the attempts of each, from ``/traces.json``
    (oldest request first), and the ``/traces`` page."""
    async with aiohttp.ClientSession() as session:
        answers = [await infer(session, base) for _ in range(count)]
        async with session.get(f"{base}/traces.json") as response:
            assert response.status == 200
            traces = (await response.json())["traces"]
        async with session.get(f"{base}/traces") as response:
            assert response.status == 200
            page = await response.text()
    attempts = []
    for trace in traces:
        spans = trace["spans"]
        if not any(span["kind"] == "SERVER" and "/infer" in span["name"] for span in spans):
            continue
        clients = [span for span in spans if span["kind"] == "CLIENT"]
        mine = []
        for span in sorted(clients, key=lambda span: span["start_ns"]):
            attributes = span["attributes"]
            assert attributes["server.address"] == attributes["network.peer.address"], span
            peer = f"{attributes['network.peer.address']}:{attributes['network.peer.port']}"
            mine.append((peer, span["status"] == "ERROR"))
        attempts.append(mine)
    return answers, attempts, page


def check_attempts_name_their_replicas(
    addresses: list[str], answers: list[Answer], attempts: list[list[Attempt]], page: str
) -> None:
    """What `traced_requests` saw of a `TRACED_ROUND_ROBIN` gateway whose pool `addresses`
    has its second replica dead: every request answered by another, each attempt's span
    naming the replica it went to (failed exactly when that is the dead one), and the
    waterfall showing each replica."""
    dead = addresses[1]
    assert all(answer.status == 200 for answer in answers), [a.body for a in answers]
    assert len(attempts) == len(answers)
    for request in attempts:
        assert request, "a request without a CLIENT span"
        assert all(peer in addresses and failed == (peer == dead) for peer, failed in request)
        assert request[-1][0] != dead, request
    assert any(len(request) > 1 for request in attempts), "no request tried the dead replica"
    for address in addresses:
        assert f"to {address}" in page
