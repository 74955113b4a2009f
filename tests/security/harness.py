"""A gateway under attack: the real REST and gRPC servers in a thread of their own, and
synchronous clients that can send what no well-behaved client would.

The servers run on their own event loop, so the hostile clients can be plain sockets and a
blocking gRPC channel: a test can lie about lengths, stall mid-body or cut a connection, and
still see exactly what came back, or that nothing did.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aiohttp import web
from hypothesis import settings
from opentelemetry.trace import Tracer

from gateway import InferRequest, InferResponse
from gateway._proto import SERVICE_NAME
from gateway.dataplane import DataPlane
from gateway.flags import parser
from gateway.hops.base import Hop
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.predictor_config import PredictorConfig
from gateway.server import access_log
from gateway.server.grpc import start_grpc_server
from gateway.server.rest import create_app
from gateway.settings import ServerSettings
from gateway.tracing import RecentSpans
from gateway.wiring import Upstreams, connect
from tests.models import EchoModel

T = TypeVar("T")

HOST = "127.0.0.1"
# Small limits, so that hostile requests reach them quickly.
MAX_BODY = 64 * 1024
GRPC_MAX_RECEIVE = 256 * 1024
BODY_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 1.5
# Every hop as the flags make it, with backoffs too short to slow a test down.
UPSTREAMS = Upstreams.from_flags(
    parser.parse_args(["--retry_backoff_initial", "0.001", "--retry_backoff_max", "0.001"])
)
# Long enough for any honest answer on a slow machine; only a hang exceeds it.
CLIENT_TIMEOUT = 15.0

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"

# Credentials a client may send: none may ever be logged or sent back.
SECRET = "s3cr3t-t0ken-4f1c"
CREDENTIALS = {
    "Authorization": f"Bearer {SECRET}-authz",
    "Proxy-Authorization": f"Basic {SECRET}-proxy",
    "Cookie": f"session={SECRET}-cookie",
    "X-Api-Key": f"{SECRET}-apikey",
}
# What a failing model's exception says; only its class may reach a client.
INTERNALS = "Traceback (most recent call last): /srv/secret/path.py password=hunter2"

GOOD_V2 = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
# gRPC codes that say "your request was wrong" (or "no such thing"): never a server failure.
CLIENT_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,  # a method that does not exist
    }
)


def fuzzing(weight: float = 1.0) -> settings:
    """The hypothesis settings of the profile in force (see conftest), with `weight` times
    its budget of examples: cheap properties run more cases than costly ones."""
    name = "fuzz" if os.environ.get(PROFILE_VARIABLE) == "fuzz" else "security"
    profile = settings.get_profile(name)
    return settings(profile, max_examples=max(1, round(profile.max_examples * weight)))


class HeaderModel(EchoModel):
    """Sets the request's parameters as its response headers, whatever they hold."""

    def __init__(self) -> None:
        super().__init__("headers")
        self.required_response_headers = True

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        if isinstance(payload, InferRequest):
            response_headers.update(payload.parameters or {})
        return await super().predict(payload, headers)


class FailingModel(EchoModel):
    """A bug: raises an exception whose text holds internals."""

    def __init__(self) -> None:
        super().__init__("boom")

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        raise RuntimeError(INTERNALS)


class GatedModel(EchoModel):
    """Echo that holds each request until the test opens the gate (`Gateway.soon`)."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = asyncio.Event()
        self.waiting = 0

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        self.waiting += 1
        await self.gate.wait()
        return await super().predict(payload, headers)


class ForwardingModel(Model):
    """A transformer that only forwards (by default to an upstream that is not there: nothing
    listens on port 9 here, so every attempt fails, and is retried once)."""

    def __init__(self, name: str = "gone", host: str = f"{HOST}:9", protocol: str = "v2") -> None:
        super().__init__(name)
        self.ready = True
        self.target = PredictorConfig(host, protocol, predictor_request_retries=1)


# The models a gateway with an upstream forwards to it, by the protocol they speak upstream.
RELAYS = {"relay-v1": "v1", "relay-v2": "v2", "relay-grpc": "grpc-v2"}


def default_models() -> list[Model]:
    echo = EchoModel()
    echo.enable_latency_logging = True  # its log line must not carry credentials either
    return [echo, HeaderModel(), FailingModel(), ForwardingModel()]


@dataclass
class Answer:
    """One HTTP response as the client saw it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # The server said it closes the connection after this answer.
    closed: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class Gateway:
    """REST and gRPC servers for `models`, run by `start` on a thread's loop until `stop`."""

    def __init__(
        self,
        settings: ServerSettings,
        models: Sequence[Model] | None = None,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        upstream: Gateway | None = None,
        tracer: Tracer | None = None,
        recent_spans: RecentSpans | None = None,
    ) -> None:
        """`upstream`, a started gateway serving the `RELAYS` models: this one forwards those
        models to it, each in its protocol."""
        self.settings = settings
        self.models = list(models) if models is not None else default_models()
        if upstream is not None:
            for name, protocol in RELAYS.items():
                port = upstream.grpc_port if protocol == "grpc-v2" else upstream.rest_port
                self.models.append(ForwardingModel(name, f"{HOST}:{port}", protocol))
        self.keepalive_timeout = keepalive_timeout
        self.tracer = tracer
        self.recent_spans = recent_spans
        self.metrics = Metrics()
        self.rest_port = 0
        self.grpc_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._hops: list[Hop] = []
        self._channel: grpc.Channel | None = None

    def __repr__(self) -> str:
        return f"Gateway(REST on {self.rest_port}, gRPC on {self.grpc_port})"

    def start(self) -> Gateway:
        self._thread.start()
        self.call(self._start())
        return self

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self.call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLIENT_TIMEOUT)
        self._loop.close()

    def soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the servers' loop."""
        self._loop.call_soon_threadsafe(callback)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CLIENT_TIMEOUT) -> T:
        """Run `coroutine` on the servers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> None:
        repository = ModelRepository()
        for model in self.models:
            repository.update(model)
            if isinstance(model, ForwardingModel):
                self._hops += connect(model, UPSTREAMS, model.target, metrics=self.metrics)
        dataplane = DataPlane(repository, max_concurrency=self.settings.max_concurrency)
        dataplane.starting = False
        # Set up as ModelServer._start_rest does it.
        runner = web.AppRunner(
            create_app(
                dataplane,
                self.settings,
                self.metrics,
                tracer=self.tracer,
                recent_spans=self.recent_spans,
            ),
            handle_signals=False,
            access_log_class=access_log.access_logger_class(self.settings.access_log_format),
            access_log_format=access_log.aiohttp_format(self.settings.access_log_format),
            logger=access_log.server_logger(),
            keepalive_timeout=self.keepalive_timeout,
        )
        await runner.setup()
        await web.TCPSite(runner, HOST, 0).start()
        self._runner = runner
        self.rest_port = runner.addresses[0][1]
        self._grpc, self.grpc_port = await start_grpc_server(
            dataplane, self.settings, self.metrics, 0, tracer=self.tracer
        )

    async def _stop(self) -> None:
        for hop in self._hops:
            await hop.aclose()
        if self._grpc is not None:
            await self._grpc.stop(None)
        if self._runner is not None:
            await self._runner.cleanup()
        # Connections whose clients left while aiohttp lingered over their unread bodies.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # REST

    def connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.rest_port), timeout=CLIENT_TIMEOUT)

    def http(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        content_length: bool = True,
    ) -> Answer:
        """Send one request on a new connection and read its answer (AssertionError when the
        server drops the connection without one)."""
        data = request_bytes(method, path, body, headers, content_length=content_length)
        return self.raw(data, method)

    def raw(self, data: bytes, method: str = "POST") -> Answer:
        """Send `data` as it is, on a new connection, and read one response."""
        with self.connect() as sock:
            sock.sendall(data)
            return read_answer(sock, method)

    def post_json(self, path: str, document: Any, **headers: str) -> Answer:
        body = json.dumps(document).encode()
        return self.http("POST", path, body, {"Content-Type": "application/json", **headers})

    def assert_rest_serving(self) -> None:
        """A good request, on a new connection, still gets its answer."""
        answer = self.post_json("/v2/models/echo/infer", GOOD_V2)
        assert answer.status == 200, answer
        assert answer.json()["outputs"][0]["data"] == [1.0, 2.0]

    def assert_grpc_serving(self) -> None:
        request = InferRequest("echo", [], request_id="still-serving")
        assert self.grpc_infer(request.to_grpc_bytes()).id == "still-serving"

    # gRPC

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                f"{HOST}:{self.grpc_port}",
                # Larger than the server takes, so the server's limit is the one tested.
                options=[("grpc.max_send_message_length", 8 * GRPC_MAX_RECEIVE)],
            )
        return self._channel

    def grpc_call(
        self, method: str, data: bytes, metadata: Iterable[tuple[str, str]] = ()
    ) -> tuple[grpc.StatusCode, bytes | str, tuple[tuple[str, str], ...]]:
        """Call `method` with serialized `data`: the code, the response (or the error's
        details), and the initial and trailing metadata."""
        rpc = self.channel.unary_unary(f"/{SERVICE_NAME}/{method}")
        sent = tuple(metadata) or None
        try:
            response, call = rpc.with_call(data, timeout=CLIENT_TIMEOUT, metadata=sent)
        except grpc.RpcError as exc:
            failed: Any = exc  # a grpc.Call too
            got = (*(failed.initial_metadata() or ()), *(failed.trailing_metadata() or ()))
            return failed.code(), failed.details() or "", tuple((k, v) for k, v in got)
        got = (*(call.initial_metadata() or ()), *(call.trailing_metadata() or ()))
        return grpc.StatusCode.OK, response, tuple((k, v) for k, v in got)

    def grpc_infer(self, data: bytes) -> InferResponse:
        """ModelInfer that must succeed; its decoded response."""
        code, body, _ = self.grpc_call("ModelInfer", data)
        assert code is grpc.StatusCode.OK, (code, body)
        assert isinstance(body, bytes)
        return InferResponse.from_grpc_bytes(body)


def request_bytes(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    *,
    content_length: bool = True,
) -> bytes:
    """An HTTP/1.1 request, exactly as given (no checks on the header values)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{key}: {value}" for key, value in pairs]
    if content_length and not any(k.lower() == "content-length" for k, _ in pairs):
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    return head + body


def read_answer(sock: socket.socket, method: str = "POST") -> Answer:
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        body = response.read()
    except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
        message = f"the server dropped the connection without an answer: {exc!r}"
        raise AssertionError(message) from None
    return Answer(response.status, response.getheaders(), body, bool(response.will_close))


def wait_closed(sock: socket.socket, within: float) -> float:
    """Read (and drop) until the server closes `sock`; the seconds that took. AssertionError
    if it is still open after `within` seconds."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < within:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {within} s")


def check_answer(answer: Answer) -> None:
    """What every request must get, however hostile: a 2xx, or a 4xx whose body is a JSON
    ``{"error": "..."}``. Never a 5xx.

    The one other 4xx is aiohttp's own plain-text 400 for what is not valid HTTP: its parser
    refuses it before the gateway sees it (so it has no x-request-id), and closes the
    connection.
    """
    assert answer.status < 500, answer
    if answer.status == 400 and answer.header("x-request-id") is None:
        assert (answer.header("Content-Type") or "").startswith("text/plain"), answer
        assert answer.closed, answer
        return
    if answer.status >= 400:
        assert answer.header("x-request-id"), answer
    if answer.status >= 400:
        assert answer.header("Content-Type") == "application/json", answer
        document = answer.json()
        assert set(document) == {"error"}, document
        assert isinstance(document["error"], str)
        assert document["error"], answer


def check_code(code: grpc.StatusCode, details: bytes | str) -> None:
    """The gRPC counterpart of `check_answer`: a code that blames the request, never one
    that says the server failed (INTERNAL, UNKNOWN, UNAVAILABLE...)."""
    assert code in CLIENT_CODES, (code, details)


class LogCapture(logging.Handler):
    """Every log record while installed, at DEBUG and up, with its text as a handler
    configured by an operator would write it (message, then traceback)."""

    LOGGERS = ("gateway", "aiohttp", "grpc", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._records_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._records_lock:
            self.records.append(record)
            self.lines.append(text)

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[LogCapture]:
        capture = cls()
        root = logging.getLogger()
        loggers = [logging.getLogger(name) for name in cls.LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
        root.addHandler(capture)
        try:
            yield capture
        finally:
            root.removeHandler(capture)
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)

    def text(self) -> str:
        with self._records_lock:
            return "\n".join(self.lines)

    def named(self, name: str) -> list[logging.LogRecord]:
        with self._records_lock:
            return [r for r in self.records if r.name == name or r.name.startswith(name + ".")]

    def wait_for(self, name: str, count: int = 1) -> list[logging.LogRecord]:
        """The records of logger `name`, once there are `count` of them (the access line is
        written after the answer is sent, so a client may read it first)."""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while len(found := self.named(name)) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(found) >= count, (name, self.text())
        return found

    def assert_no_forged_lines(self) -> None:
        """No message holds a line break (tracebacks aside): client text cannot forge lines."""
        with self._records_lock:
            for record in self.records:
                message = record.getMessage()
                assert "\n" not in message, (record.name, message)
                assert "\r" not in message, (record.name, message)
