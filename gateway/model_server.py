"""`ModelServer`: serves models over REST and gRPC, and stops without dropping requests.

Lifecycle: the servers listen first (live, not ready); models not yet loaded are loaded (off
the event loop) and started; then the server is ready. On SIGTERM / SIGINT readiness flips
at once, listeners close, in-flight requests get `grace_period` to finish, then models stop
and upstream connections close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import logging.config
import os
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import logs, tracing
from gateway.dataplane import DataPlane
from gateway.flags import parser
from gateway.hops.base import Hop
from gateway.metrics import Metrics
from gateway.model import BaseKServeModel, Model
from gateway.model_repository import ModelRepository
from gateway.predictor_config import PredictorConfig
from gateway.server import access_log, allocator, workers
from gateway.server.grpc import start_grpc_server
from gateway.server.rest import create_app
from gateway.server.workers import Shared
from gateway.settings import ServerSettings
from gateway.wiring import Upstreams, connect, disconnect

__all__ = ["ModelServer", "parser"]

logger = logging.getLogger("gateway.model_server")

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]


class ModelServer:
    """KServe's `ModelServer`: every argument left as None is taken from the command line."""

    def __init__(
        self,
        http_port: int | None = None,
        grpc_port: int | None = None,
        workers: int | None = None,
        max_threads: int | None = None,
        max_asyncio_workers: int | None = None,
        registered_models: ModelRepository | None = None,
        enable_grpc: bool | None = None,
        enable_docs_url: bool | None = None,
        enable_latency_logging: bool | None = None,
        access_log_format: str | None = None,
        grace_period: float | None = None,
        predictor_config: PredictorConfig | None = None,
        **options: Any,
    ) -> None:
        # KServe scripts configure the server through sys.argv; a caller that has parsed
        # its own flags passes them as `args`.
        args = options.pop("args", None)
        if args is None:
            args, ignored = parser.parse_known_args()
            if ignored:  # KServe adds flags between releases: go on without them
                logger.warning("ignoring unknown flags: %s", " ".join(ignored))
        flags = vars(args)
        given = {
            "http_port": http_port,
            "grpc_port": grpc_port,
            "workers": workers,
            "max_threads": max_threads,
            "max_asyncio_workers": max_asyncio_workers,
            "enable_grpc": enable_grpc,
            "enable_docs_url": enable_docs_url,
            "enable_latency_logging": enable_latency_logging,
            "access_log_format": access_log_format,
            "grace_period": grace_period,
            **options,
        }
        fields = set(ServerSettings.__dataclass_fields__)
        unknown = set(given) - fields - _EXTRA_OPTIONS
        if unknown:
            raise TypeError(f"unknown ModelServer options: {', '.join(sorted(unknown))}")
        chosen = {
            key: flags[key] if given.get(key) is None else given[key]
            for key in fields | _EXTRA_OPTIONS
            if key in flags or given.get(key) is not None
        }
        self.settings = ServerSettings(**{k: v for k, v in chosen.items() if k in fields})
        self._options = {k: v for k, v in chosen.items() if k in _EXTRA_OPTIONS}
        self.registered_models = registered_models or ModelRepository()
        self.predictor_config = predictor_config or _predictor_config_from(args)
        self.explainer_host: str | None = args.explainer_host
        self.upstreams: Upstreams = self._options.pop("upstreams", None) or Upstreams.from_flags(
            args
        )
        self.dataplane = DataPlane(
            self.registered_models, max_concurrency=self.settings.max_concurrency
        )
        self._hops: dict[str, list[Hop]] = {}
        self._tracer: Any = None
        self._exception_handler: ExceptionHandler | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._grpc_server: Any = None
        self._loading: asyncio.Task[None] | None = None
        # Set in worker processes: the REST socket they share, and where metrics are pooled.
        self._shared_socket: socket.socket | None = None
        self._metrics_dir: str | None = None
        self.bound_http_port: int | None = None
        self.bound_grpc_port: int | None = None
        self.metrics: Metrics | None = None
        self.recent_spans: tracing.RecentSpans | None = None
        if self._options.get("configure_logging", True):
            _configure_logging(
                self._options.get("log_config_file"), self._options.get("log_format") or "plain"
            )

    # KServe exposes these as attributes.
    http_port = property(lambda self: self.settings.http_port)
    grpc_port = property(lambda self: self.settings.grpc_port)
    workers = property(lambda self: self.settings.workers)
    max_threads = property(lambda self: self.settings.max_threads)
    max_asyncio_workers = property(lambda self: self.settings.max_asyncio_workers)
    enable_grpc = property(lambda self: self.settings.enable_grpc)
    enable_docs_url = property(lambda self: self.settings.enable_docs_url)
    enable_latency_logging = property(lambda self: self.settings.enable_latency_logging)
    access_log_format = property(lambda self: self.settings.access_log_format)
    grace_period = property(lambda self: self.settings.grace_period)

    def register_model(self, model: BaseKServeModel, name: str | None = None) -> None:
        """Serve `model` under `name` (default: its own name); a model may have several."""
        if not model.name:
            raise ValueError("cannot register a model without a name")
        self.registered_models.update(model, name)
        if isinstance(model, Model):
            model.enable_latency_logging = self.settings.enable_latency_logging
            if model.predictor_config is None:
                model.predictor_config = self.predictor_config
            if model.explainer_host is None:
                model.explainer_host = self.explainer_host
        logger.info("registered model %s", name or model.name)

    def register_exception_handler(self, handler: ExceptionHandler) -> None:
        """Use `handler(loop, context)` for exceptions nothing else caught."""
        self._exception_handler = handler

    def default_exception_handler(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        """Log what reached the event loop uncaught, then defer to asyncio's handler."""
        if "exception" in context:
            logger.error("uncaught exception: %s", context["exception"])
        logger.error("event loop: %s", context.get("message"))
        loop.default_exception_handler(context)

    def start(self, models: list[BaseKServeModel]) -> None:
        """Serve `models` until SIGTERM / SIGINT (blocks)."""
        if not isinstance(models, list):
            raise RuntimeError("models must be a list of models")
        for model in models:
            if not isinstance(model, BaseKServeModel):
                raise RuntimeError(f"{type(model).__name__} is not a BaseKServeModel")
            self.register_model(model)
        if self.settings.workers > 1:
            workers.run(self.settings, self._serve_worker)
        else:
            self.run_process()

    def _serve_worker(self, shared: Shared) -> None:
        """Run this (forked) worker's servers on what it shares with the other workers."""
        self._shared_socket = shared.rest_socket
        self._metrics_dir = shared.metrics_dir
        self.settings = dataclasses.replace(
            self.settings, grpc_port=shared.grpc_port, grpc_reuse_port=True
        )
        self.run_process()

    def run_process(self) -> None:
        """Run this process's servers to completion on the configured event loop."""
        allocator.tune()
        loop_kind = self._options.get("event_loop", "auto")
        if loop_kind != "asyncio":
            try:
                import uvloop
            except ImportError:
                if loop_kind == "uvloop":
                    raise
            else:
                uvloop.run(self.serve())
                return
        asyncio.run(self.serve())

    def stop(self, sig: int) -> None:
        """Begin a graceful stop (safe to call from a signal handler or another thread)."""
        logger.info("stopping on signal %s", sig)
        self.dataplane.draining = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self) -> None:
        """Start, wait for a stop, drain."""
        await self.startup()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            assert self._stop is not None
            await self._stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
                loop.remove_signal_handler(sig)
            await self.shutdown()

    async def startup(self) -> None:
        """Listen on both ports, then load and start the models in the background."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        loop.set_exception_handler(self._exception_handler or self.default_exception_handler)
        threads = self.settings.max_asyncio_workers or min(32, (os.cpu_count() or 1) + 4)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=threads))
        self.metrics = Metrics(self._metrics_dir)
        # Built here, in each worker process: a batch exporter's thread does not survive fork.
        # Each worker keeps its own recent traces: /traces shows the worker that answers.
        self.recent_spans = tracing.recent_spans(self.settings.trace_buffer)
        self._tracer = tracing.configure_tracing(
            tracing.TracingSettings.from_env(os.environ),
            [self.recent_spans] if self.recent_spans is not None else [],
        )
        await self._start_rest(self.metrics)
        if self.settings.enable_grpc:
            self._grpc_server, self.bound_grpc_port = await start_grpc_server(
                self.dataplane,
                self.settings,
                self.metrics,
                self.settings.grpc_port,
                tracer=self._tracer,
            )
        logger.info("listening: REST on %s, gRPC on %s", self.bound_http_port, self.bound_grpc_port)
        self._loading = asyncio.create_task(self._load_models())

    async def shutdown(self) -> None:
        """Drain: not ready, stop listening, finish in-flight requests, stop models."""
        self.dataplane.draining = True
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        grace = self.settings.grace_period
        stops = []
        if self._runner is not None:
            stops.append(self._runner.cleanup())
        if self._grpc_server is not None:
            stops.append(self._grpc_server.stop(grace))
        await asyncio.gather(*stops, return_exceptions=True)
        for name, model in list(self.registered_models.get_models().items()):
            try:
                if isinstance(model, Model):
                    await disconnect(model, self._hops.pop(name, []))
                model.stop()
                if model.engine:
                    model.stop_engine()
            except Exception:
                logger.exception("stopping model %s failed", name)
        logger.info("stopped")

    async def _start_rest(self, metrics: Metrics) -> None:
        app = create_app(
            self.dataplane,
            self.settings,
            metrics,
            tracer=self._tracer,
            recent_spans=self.recent_spans,
        )
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log_class=access_log.access_logger_class(
                self.settings.access_log_format, traced=self._tracer is not None
            ),
            access_log_format=access_log.aiohttp_format(self.settings.access_log_format),
            logger=access_log.server_logger(),
            keepalive_timeout=self.settings.timeout_keep_alive,
            shutdown_timeout=self.settings.grace_period,
        )
        await runner.setup()
        ssl_context = _ssl_context(self._options)
        site: web.BaseSite
        if self._shared_socket is not None:
            site = web.SockSite(runner, self._shared_socket, ssl_context=ssl_context)
        else:
            site = web.TCPSite(
                runner,
                self.settings.listen_address,
                self.settings.http_port,
                ssl_context=ssl_context,
            )
        await site.start()
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_http_port = sockets[0].getsockname()[1] if sockets else self.settings.http_port

    async def _load_models(self) -> None:
        loop = asyncio.get_running_loop()
        for name, model in list(self.registered_models.get_models().items()):
            try:
                if not model.ready:
                    await loop.run_in_executor(None, model.load)
                    if not model.ready:
                        logger.error("model %s did not become ready after load()", name)
                        continue
                model.start()
                if model.engine:
                    await model.start_engine()
                if isinstance(model, Model):
                    self._hops[name] = connect(
                        model,
                        self.upstreams,
                        self.predictor_config,
                        metrics=self.metrics,
                        tracer=self._tracer,
                    )
            except Exception:
                logger.exception("loading model %s failed; it stays not ready", name)
                model.ready = False
        self.dataplane.starting = False
        logger.info("ready: %s", ", ".join(self.registered_models.get_models()))


_EXTRA_OPTIONS = frozenset(
    {
        "event_loop",
        "ssl_certfile",
        "ssl_keyfile",
        "configure_logging",
        "log_config_file",
        "upstreams",
        "log_format",
    }
)


def _predictor_config_from(args: Any) -> PredictorConfig | None:
    if not args.predictor_host:
        return None
    return PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol=args.protocol or args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
        predictor_health_check=args.enable_predictor_health_check,
    )


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if not (certfile and keyfile):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def _configure_logging(config_file: str | None, log_format: str) -> None:
    # Every record would otherwise look up its thread, process and source line: a cost per
    # request (access and latency lines) that no default format prints.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if config_file:
        with open(config_file) as handle:
            logging.config.dictConfig(json.load(handle))
    elif not logging.getLogger().handlers:
        logs.configure(logging.INFO, log_format)
