"""Pools: CPU per request of a hop to a pool of 3 replicas against a hop to one upstream
(ratio in the same run), and the requests an outage sends upstream with and without the
retry budget.

The replicas are small aiohttp servers in a child process (127.0.0.1-3, one port; a second
port answers 503 to everything, as a total outage does, and counts). The hops are built as
the gateway builds them (`gateway.hops.factory.build_hop`) and driven from this process,
whose CPU time (`time.process_time`) per request is the figure: the client's share of it is
the same for both hops, so the ratio shows what the pool adds.

    python bench/pool.py            # 3000 requests per hop, 300 in the outage
    python bench/pool.py --quick    # a few hundred (smoke test)

Target: the pooled hop costs at most 1.15x the single-upstream hop's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.synchronize
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy
from aiohttp import web

from gateway.hops.factory import build_hop
from gateway.hops.pool import PoolSettings, RetryBudget
from gateway.hops.replicas import Pooling
from gateway.hops.settings import HopSettings, RetryPolicy
from gateway.infer_request import InferRequest
from gateway.tensor import InferInput

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
ANSWER = {
    "model_name": "m",
    "outputs": [{"name": "y", "datatype": "INT32", "shape": [1], "data": [1]}],
}
TARGET_RATIO = 1.15


def free_port() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((HOSTS[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for host in HOSTS[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def serve(ok_port: int, down_port: int, ready: multiprocessing.synchronize.Event) -> None:
    counts = {"down": 0}

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    async def down(request: web.Request) -> web.Response:
        await request.read()
        counts["down"] += 1
        return web.json_response({"error": "down"}, status=503)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def main() -> None:
        ok, gone = web.Application(), web.Application()
        ok.router.add_post("/v2/models/m/infer", infer)
        gone.router.add_post("/v2/models/m/infer", down)
        gone.router.add_get("/count", count)
        for app, port in ((ok, ok_port), (gone, down_port)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            for host in HOSTS:
                await web.TCPSite(runner, host, port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def request() -> InferRequest:
    # A tiny JSON tensor: the hop's own cost dominates.
    tensor = InferInput("x", [1], "INT32")
    tensor.set_data_from_numpy(numpy.array([1], dtype=numpy.int32), binary_data=False)
    return InferRequest("m", [tensor])


async def cpu_per_request(settings: HopSettings, count: int, concurrency: int) -> float:
    hop = build_hop(settings, metrics=None, pooling=Pooling(budget=RetryBudget()))
    payload = request()
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await hop.infer(payload, {})

    await asyncio.gather(*(one() for _ in range(50)))  # warm: connections, facts
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    seconds = time.process_time() - started
    await hop.aclose()
    return seconds / count


async def outage(settings: HopSettings, count: int, concurrency: int, budget: float) -> int:
    import aiohttp

    hop = build_hop(
        settings, metrics=None, pooling=Pooling(budget=RetryBudget(budget, min_concurrency=0))
    )
    limit = asyncio.Semaphore(concurrency)
    base = settings.host.split(",")[0]

    async def upstream_count() -> int:
        async with aiohttp.ClientSession() as session, session.get(f"http://{base}/count") as r:
            return int((await r.json())["down"])

    async def one() -> None:
        async with limit:
            with contextlib.suppress(Exception):  # every call fails: the outage
                await hop.infer(request(), {})

    before = await upstream_count()
    await asyncio.gather(*(one() for _ in range(count)))
    await hop.aclose()
    return await upstream_count() - before


async def run(quick: bool) -> None:
    ok_port, down_port = free_port(), free_port()
    ready = multiprocessing.Event()
    child = multiprocessing.Process(target=serve, args=(ok_port, down_port, ready), daemon=True)
    child.start()
    try:
        if not ready.wait(20):
            raise RuntimeError("the replicas did not start")
        count = 400 if quick else 3000
        base = HopSettings(
            role="predictor", host="", model_name="m", protocol="v2", rest_format="json"
        )
        single = replace(base, host=f"{HOSTS[0]}:{ok_port}")
        pooled = replace(base, host=",".join(f"{h}:{ok_port}" for h in HOSTS), pool=PoolSettings())
        # Interleaved, best of three each: the first runs pay for warming up.
        ones, threes = [], []
        for _ in range(3):
            ones.append(await cpu_per_request(single, count, 16))
            threes.append(await cpu_per_request(pooled, count, 16))
        one, three = min(ones), min(threes)
        ratio = three / one
        print("| hop | CPU per request (us) |")
        print("|---|---|")
        print(f"| single upstream | {one * 1e6:.0f} |")
        print(f"| pool of 3 replicas | {three * 1e6:.0f} |")
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(f"ratio pooled / single: {ratio:.2f} (target <= {TARGET_RATIO}): {verdict}")
        retries, requests = 3, 60 if quick else 300
        down = replace(
            base,
            host=",".join(f"{h}:{down_port}" for h in HOSTS),
            retry=RetryPolicy(retries=retries, backoff_initial=0.001, backoff_max=0.01),
        )
        print(f"\noutage: {requests} requests, {retries} retries each, 20 at a time")
        print("| retry budget | requests upstream | amplification |")
        print("|---|---|---|")
        for percent in (100.0, 20.0):
            sent = await outage(down, requests, 20, percent)
            print(f"| {percent:g}% | {sent} | {sent / requests:.2f}x |")
    finally:
        child.terminate()
        child.join(5)


def main() -> None:
    # An outage logs each failure and ejection: the tables are the point here.
    logging.getLogger("gateway").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred requests")
    asyncio.run(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
