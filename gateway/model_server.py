"""`ModelServer`: serves models over REST and gRPC, and stops without dropping requests.

Lifecycle: the servers listen first (live, not ready); models not yet loaded are loaded (off
the event loop) and started; then the server is ready. On SIGTERM / SIGINT readiness flips
at once, listeners close, in-flight requests get `grace_period` to finish, then models stop
and upstream connections close.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import logs, naming, preflight, tracing
from gateway.dataplane import DataPlane
from gateway.flags import parser
from gateway.hops.base import Hop
from gateway.metrics import Metrics
from gateway.model import BaseKServeModel, Model
from gateway.model_repository import ModelRepository
from gateway.predictor_config import PredictorConfig
from gateway.server import allocator, event_loop, readiness, rest_site, tls
from gateway.server.drain import BoundedExecutor, Drain, stop_serving
from gateway.server.grpc import start_grpc_server
from gateway.server.rest import create_app
from gateway.settings import ServerSettings
from gateway.wiring import Upstreams, connect, disconnect

if TYPE_CHECKING:
    from gateway.server.workers import Shared

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
        self.settings, self._options = ServerSettings.chosen(vars(args), given, _EXTRA_OPTIONS)
        self.registered_models = registered_models or ModelRepository()
        self.predictor_config = predictor_config or PredictorConfig.from_flags(args)
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
        self._trimming: asyncio.Task[None] | None = None
        self.drain = Drain(self.settings.grace_period)
        self._executor: BoundedExecutor | None = None
        self._stopped_at: float | None = None
        # Set in worker processes: the REST socket they share, and where metrics are pooled.
        self._shared_socket: socket.socket | None = None
        self._metrics_dir: str | None = None
        self._worker: Shared | None = None
        self.bound_http_port: int | None = None
        self.bound_grpc_port: int | None = None
        self.metrics: Metrics | None = None
        self.recent_spans: tracing.RecentSpans | None = None
        # Names this server in traces and Server-Timing: set at start-up (gateway.naming).
        self.service_name: str | None = None
        if self._options.get("configure_logging", True):
            logs.configure_process(
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
        """Serve `models` until SIGTERM / SIGINT (blocks). Settings that cannot work stop it
        with one line on stderr (``gateway: error: ...``) and exit status 2."""
        if not isinstance(models, list):
            raise RuntimeError("models must be a list of models")
        for model in models:
            if not isinstance(model, BaseKServeModel):
                raise RuntimeError(f"{type(model).__name__} is not a BaseKServeModel")
            self.register_model(model)
        try:
            self.check_settings()
            if self.settings.workers > 1:
                # Here, not at the top: multiprocessing is for more than one worker only.
                from gateway.server import workers

                preflight.check_ports_free(self.settings)
                workers.run(self.settings, self._serve_worker)
            else:
                self.run_process()
        except preflight.StartupError as exc:
            preflight.refuse(exc)

    def check_settings(self) -> None:
        """Refuse settings that cannot work (raises `gateway.preflight.StartupError`)."""
        upstreams = self.upstreams
        hops = (upstreams.predictor, upstreams.explainer, *filter(None, [upstreams.shadow]))
        preflight.check(self.settings, self._options, hops)
        config = self.predictor_config
        if config is not None and config.predictor_host:
            preflight.check_host("--predictor_host", config.predictor_host)

    def _serve_worker(self, shared: Shared) -> None:
        """Run this (forked) worker's servers on what it shares with the other workers."""
        self._shared_socket = shared.rest_socket
        self._metrics_dir = shared.metrics_dir
        self.dataplane.conditions.append(shared.all_alive)
        self._worker = shared
        self.settings = dataclasses.replace(
            self.settings, grpc_port=shared.grpc_port, grpc_reuse_port=True
        )
        self.run_process()

    def run_process(self) -> None:
        """Run this process's servers to completion on the configured event loop."""
        allocator.tune()
        event_loop.run(self.serve(), self._options.get("event_loop", "auto"))
        self._exit_on_time()

    def _exit_on_time(self) -> None:
        """Exit now if threads still run sync model code past the stop's deadline: the
        interpreter would wait for them (the requests they served were answered already)."""
        busy = self._executor.busy() if self._executor is not None else 0
        if busy:
            logger.warning("exiting with %d threads still running model code", busy)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def stop(self, sig: int) -> None:
        """Begin a graceful stop (safe to call from a signal handler or another thread)."""
        logger.info("stopping on signal %s", sig)
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
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
        # Its threads decode and encode large bodies: the periodic trim reaches their arenas.
        self._executor = BoundedExecutor(max_workers=threads, initializer=allocator.adopt_thread)
        loop.set_default_executor(self._executor)
        self.metrics = Metrics(self._metrics_dir)
        # Built here, in each worker process: a batch exporter's thread does not survive fork.
        # Each worker keeps its own recent traces: /traces shows the worker that answers.
        self.recent_spans = tracing.recent_spans(self.settings.trace_buffer)
        self.service_name = naming.service_name(self.registered_models.get_models(), os.environ)
        self._tracer = tracing.configure_tracing(
            dataclasses.replace(
                tracing.TracingSettings.from_env(os.environ), service_name=self.service_name
            ),
            [self.recent_spans] if self.recent_spans is not None else [],
        )
        address = self.settings.listen_address
        try:
            await self._start_rest(self.metrics)
        except OSError as exc:
            raise preflight.bind_error(
                "REST", "--http_port", address, self.settings.http_port, exc
            ) from None
        if self.settings.enable_grpc:
            try:
                await self._start_grpc(address, self.metrics)
            except BaseException:
                if self._runner is not None:
                    await self._runner.cleanup()
                raise
        # The ports first, in a form tools read (the demo, the tests, the benchmarks).
        logger.info(
            "listening: REST on %s, gRPC on %s, address %s%s (service %s)",
            self.bound_http_port,
            self.bound_grpc_port,
            address,
            " (every interface; --listen_address to choose)" if address in _ANY else "",
            self.service_name,
        )
        self._loading = asyncio.create_task(self._load_models())
        self._trimming = asyncio.create_task(allocator.trim_periodically())
        if self._worker is not None:
            self._worker.mark_serving()

    async def _start_grpc(self, address: str, metrics: Metrics) -> None:
        port = self.settings.grpc_port
        if not self.settings.grpc_reuse_port:  # workers share theirs: probed before the fork
            # gRPC's own failed bind logs lines of its own before it raises: probe first.
            preflight.check_port_free("gRPC", "--grpc_port", address, port)
        try:
            self._grpc_server, self.bound_grpc_port = await start_grpc_server(
                self.dataplane,
                self.settings,
                metrics,
                port,
                tracer=self._tracer,
                service_name=self.service_name,
                drain=self.drain,
                credentials=tls.grpc_credentials(self._options),
            )
        except (OSError, RuntimeError) as exc:  # gRPC's failed bind is a RuntimeError
            raise preflight.bind_error("gRPC", "--grpc_port", address, port, exc) from None

    async def shutdown(self) -> None:
        """Drain (`gateway.server.drain`): not ready, stop listening, give in-flight requests
        the grace period, answer those still running, then stop models."""
        self.dataplane.draining = True
        stopped_at = self._stopped_at or time.monotonic()
        if self._executor is not None:
            # Sync model code still running past this is not waited for (see run_process).
            self._executor.deadline = stopped_at + self.settings.grace_period + 0.75
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self._trimming is not None:
            self._trimming.cancel()
        try:
            await stop_serving(self.drain, self._runner, self._grpc_server)
        except Exception:
            logger.exception("stopping the servers failed")
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
            service_name=self.service_name,
            drain=self.drain,
        )
        self._runner, self.bound_http_port = await rest_site.listen(
            app,
            self.settings,
            metrics,
            traced=self._tracer is not None,
            shared_socket=self._shared_socket,
            ssl_context=tls.ssl_context(self._options),
        )

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
        # What exists now (modules, models, hops: some 50k objects) lives as long as the
        # process; out of the collector's sight, each full collection of what requests leave
        # behind holds the loop for a fraction of the time it would.
        gc.freeze()
        names = ", ".join(self.registered_models.get_models())
        logger.info("loaded: %s", names)
        await readiness.announce(self.dataplane, names)


# Addresses that listen on every interface.
_ANY = ("0.0.0.0", "::", "")

_EXTRA_OPTIONS = frozenset(
    {"event_loop", "ssl_certfile", "ssl_keyfile", "configure_logging", "log_config_file"}
    | {"upstreams", "log_format"}
)
