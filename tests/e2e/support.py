"""What the end-to-end tests share: server processes, in-process gateways, blocking clients
kept off the event loop, and small upstreams that record what reached them."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import grpc
from aiohttp import web

from gateway.__main__ import IdentityTransformer
from gateway._proto import SERVICE_NAME
from gateway.flags import parser
from gateway.hops.pool import StaticResolver
from gateway.model import Model
from gateway.model_server import ModelServer
from gateway.wiring import Upstreams
from tests.hops.upstreams import serve_app, serve_model_infer
from tests.server.procs import ServerProcess, run_server

PREDICTOR_APP = "tests.apps.kserve_style"
MODEL = "m"
PROTOCOLS = ("v1", "v2", "grpc-v2")

T = TypeVar("T")
C = TypeVar("C")


# Processes


def predictor_command(*extra: str) -> list[str]:
    """An EchoModel server called MODEL, written as KServe's examples are."""
    return [PREDICTOR_APP, "--model_name", MODEL, "--http_port", "0", "--grpc_port", "0", *extra]


def gateway_command(predictor: str, protocol: str, *extra: str) -> list[str]:
    """``gateway serve`` (identity, unless --transformer is among `extra`) for `predictor`."""
    return [
        "gateway", "serve", "--model_name", MODEL, "--predictor_host", predictor,
        "--predictor_protocol", protocol, "--http_port", "0", "--grpc_port", "0",
        "--enable_latency_logging", "false", *extra,
    ]  # fmt: skip


def start_servers(
    stack: ExitStack, *commands: Sequence[str], ready: bool = True
) -> list[ServerProcess]:
    """Start every command at once (each is ``python -m ...``); return them once all listen
    and (if `ready`) answer ready. Each is stopped when `stack` closes."""
    managers = [run_server(*command) for command in commands]
    servers: list[ServerProcess] = []
    failures: list[BaseException] = []
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        for manager, future in zip(managers, futures, strict=True):
            try:
                servers.append(future.result())
            except BaseException as exc:  # the manager has cleaned up after itself
                failures.append(exc)
            else:
                stack.push(manager.__exit__)
    if failures:
        raise failures[0]
    for server in servers:
        if ready:
            wait_ready(server)
    return servers


def wait_ready(
    server: ServerProcess, timeout: float = 30.0, path: str = "/v2/health/ready"
) -> None:
    """Wait until `server` answers 200 at `path`: ready, by default (it listens before its
    models have loaded)."""
    url = f"{server.base_url}{path}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise AssertionError(f"{url} not ready:\n{server.output()}")
        time.sleep(0.05)


def host(server: ServerProcess, protocol: str = "v2") -> str:
    """``127.0.0.1:port`` of `server` for `protocol` (REST for v1 / v2)."""
    port = server.grpc_port if protocol == "grpc-v2" else server.http_port
    return f"127.0.0.1:{port}"


# In-process gateways


@dataclass(frozen=True)
class Gateway:
    server: ModelServer

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.server.bound_http_port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.http}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.server.bound_grpc_port}"


@asynccontextmanager
async def gateway(
    *flags: str, model: Model | None = None, resolver: StaticResolver | None = None
) -> AsyncIterator[Gateway]:
    """A ModelServer in this process, configured by KServe's flags as ``gateway serve`` is,
    serving `model` (default: the identity transformer) on ports 0; ready when yielded.
    `resolver` stands in for DNS in its pools."""
    args = parser.parse_args(["--model_name", MODEL, "--grace_period", "1", *flags])
    server = ModelServer(
        http_port=0,
        grpc_port=0,
        listen_address="127.0.0.1",
        args=args,
        configure_logging=False,
        upstreams=replace(Upstreams.from_flags(args), resolver=resolver),
    )
    server.register_model(model or IdentityTransformer(MODEL))
    await server.startup()
    try:
        for _ in range(500):
            if await server.dataplane.ready():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the in-process gateway did not become ready")
        yield Gateway(server)
    finally:
        await server.shutdown()


def gateway_to(
    predictor: str, protocol: str, *flags: str, model: Model | None = None
) -> AbstractAsyncContextManager[Gateway]:
    """`gateway` forwarding to `predictor` (``host:port``) over `protocol`."""
    return gateway(
        "--predictor_host", predictor, "--predictor_protocol", protocol, *flags, model=model
    )


# Blocking clients


class InThread(Generic[C]):
    """A blocking client (tritonclient) made, used and closed in one worker thread of its
    own: gevent's hub belongs to a thread, and the servers may share the test's loop."""

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._client: C | None = None
        self._thread = ThreadPoolExecutor(1)

    async def run(self, call: Callable[[C], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, call)

    def _run(self, call: Callable[[C], T]) -> T:
        if self._client is None:
            self._client = self._make()
        return call(self._client)

    def close(self) -> None:
        self._thread.submit(self._close).result()
        self._thread.shutdown()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[attr-defined]
            self._client = None


# Upstreams that record what reached them


@dataclass
class Seen:
    """What one upstream received: each request's headers (lower-case), bodies, deadlines."""

    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    # gRPC: seconds the call had left when it arrived.
    remaining: list[float | None] = field(default_factory=list)

    @property
    def hits(self) -> int:
        return len(self.headers)


RestBehaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]
GrpcBehaviour = Callable[[bytes, "grpc.aio.ServicerContext[bytes, bytes]", int], Awaitable[bytes]]


@asynccontextmanager
async def rest_upstream(behaviour: RestBehaviour) -> AsyncIterator[tuple[str, Seen]]:
    """A REST predictor (v1 ``:predict`` and v2 ``/infer`` for any model) whose answers
    `behaviour(request, hit)` gives, hit counting from 1; yields its address and `Seen`."""
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.headers.append({k.lower(): v for k, v in request.headers.items()})
        seen.bodies.append(await request.read())
        return await behaviour(request, seen.hits)

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", handle)
    app.router.add_post("/v1/models/{name}:predict", handle)
    async with serve_app(app) as address:
        yield address, seen


@asynccontextmanager
async def grpc_upstream(behaviour: GrpcBehaviour) -> AsyncIterator[tuple[str, Seen]]:
    """A gRPC predictor whose ModelInfer answers `behaviour(data, context, hit)` gives;
    yields its address and `Seen`."""
    seen = Seen()

    async def model_infer(data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        metadata = context.invocation_metadata() or ()
        seen.headers.append({k: v for k, v in metadata if isinstance(v, str)})
        seen.bodies.append(data)
        seen.remaining.append(context.time_remaining())
        return await behaviour(data, context, seen.hits)

    async with serve_model_infer(model_infer) as address:
        yield address, seen


def grpc_infer(channel: grpc.aio.Channel) -> Any:
    """ModelInfer on `channel`, bytes in and bytes out."""
    return channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer", None, None)
