"""Access lines: REST's formats (KServe's gunicorn-style ``%(h)s`` turned into aiohttp's
atoms), and the gRPC door's one line per call; with tracing on, the line of a sampled request
names its trace (see `gateway.logs`)."""

from __future__ import annotations

import logging
import re
import time as _time
from collections.abc import MutableMapping
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway import logs, tracing_ids
from gateway.server.rest_common import CONTEXT

# gunicorn / asgi-logger atom -> aiohttp atom. Request bodies are never logged.
_ATOMS = {
    "h": "%a",
    "l": "-",
    "u": "-",
    "t": "%t",
    "r": "%r",
    "m": "-",
    "U": "-",
    "s": "%s",
    "b": "%b",
    "B": "%b",
    "f": "%{Referer}i",
    "a": "%{User-Agent}i",
    "T": "%T",
    "D": "%D",
    "L": "%Tf",
    "p": "%P",
}

# The gRPC door's access lines (the REST door's go to aiohttp's ``aiohttp.access``).
GRPC_ACCESS_LOGGER = "gateway.access.grpc"

_GUNICORN_ATOM = re.compile(r"%\((\w+)\)s|%\(\{([^}]+)\}(i|o)\)s")


def aiohttp_format(fmt: str | None) -> str:
    """The aiohttp access-log format for `fmt` (either style); aiohttp's default for None."""
    if not fmt:
        return AccessLogger.LOG_FORMAT
    if "%(" not in fmt:
        return fmt

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return _ATOMS.get(match.group(1), "-")
        header, direction = match.group(2), match.group(3)
        return f"%{{{header}}}{direction}"

    return _GUNICORN_ATOM.sub(replace, fmt)


class _Stamp:
    """The access lines' timestamp (``[28/Nov/2026:10:00:00 +0000]``), formatted once a
    second rather than once a line."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        now = int(_time.time())
        if now != self._second:
            self._second = now
            self._text = _time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", _time.gmtime(now))
        return self._text


class FastAccessLogger(AbstractAccessLogger):
    """The default access line, built cheaply: the timestamp is formatted once a second and
    the line only when a handler will write it (aiohttp's logger re-formats every atom)."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._stamp = _Stamp()

    def log(
        self,
        request: BaseRequest,
        response: StreamResponse,
        time: float,
        trace: tuple[str, str] | None = None,
    ) -> None:
        major, minor = request.version
        logs.info(
            self.logger,
            '%s %s "%s %s HTTP/%d.%d" %d %d %.6f',
            request.remote,
            self._stamp(),
            request.method,
            request.path_qs,
            major,
            minor,
            response.status,
            response.body_length,
            time,
            trace=trace,
        )


class GrpcAccessLogger:
    """One line per gRPC call, at the cost of the REST line: the peer, the time, the method
    and model, the status code, the answer's bytes, the seconds, the request id (and the
    trace of a sampled call)::

        127.0.0.1 [28/Nov/2026:10:00:00 +0000] "gRPC ModelInfer iris" OK 93 0.001207 request_id=r-1
    """

    __slots__ = ("_stamp", "logger")

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(GRPC_ACCESS_LOGGER)
        self._stamp = _Stamp()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(
        self,
        peer: str,
        method: str,
        model: str,
        code: str,
        size: int,
        seconds: float,
        request_id: str,
        trace: tuple[str, str] | None = None,
    ) -> None:
        if not model.isprintable():  # a name from the message: no line breaks into the log
            model = repr(model)
        logs.info(
            self.logger,
            '%s %s "gRPC %s %s" %s %d %.6f request_id=%s',
            peer or "-",
            self._stamp(),
            method,
            model or "-",
            code,
            size,
            seconds,
            request_id or "-",
            trace=trace,
        )


class TracedFastAccessLogger(FastAccessLogger):
    """The default line, naming the trace of a sampled request."""

    def log(
        self,
        request: BaseRequest,
        response: StreamResponse,
        time: float,
        trace: tuple[str, str] | None = None,
    ) -> None:
        super().log(request, response, time, _trace(request))


class TracedAccessLogger(AccessLogger):
    """aiohttp's logger for the operator's format, naming the trace of a sampled request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        trace = _trace(request)
        if trace is None:
            super().log(request, response, time)
            return
        # aiohttp's logger formats the line and hands it to `self.logger.info`: for this line,
        # that is an adapter making the record a traced one.
        plain = self.logger
        self.logger = _TracedLogger(plain, trace)  # type: ignore[assignment]
        try:
            super().log(request, response, time)
        finally:
            self.logger = plain


class _TracedLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def __init__(self, logger: logging.Logger, trace: tuple[str, str]) -> None:
        super().__init__(logger)
        self.trace = trace

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        record = logs.traced_record(self.logger, str(msg), args, self.trace)
        extra: MutableMapping[str, object] = kwargs.get("extra") or {}
        record.__dict__.update(extra)
        self.logger.handle(record)


def _trace(request: BaseRequest) -> tuple[str, str] | None:
    """(trace_id, span_id) of the request's SERVER span, when it was sampled."""
    context = request.get(CONTEXT)
    span = None if context is None else context.span
    return None if span is None else tracing_ids.log_ids(span)


def access_logger_class(fmt: str | None, traced: bool = False) -> type[AbstractAccessLogger]:
    """Our fast logger for the default line; aiohttp's when the operator chose a format; with
    `traced`, their variants that name the trace of a sampled request."""
    if traced:
        return TracedFastAccessLogger if not fmt else TracedAccessLogger
    return FastAccessLogger if not fmt else AccessLogger


class _ParseErrorFilter(logging.Filter):
    """aiohttp logs each request it cannot parse with a traceback whose text quotes the
    offending bytes, so a malformed ``Authorization`` header would be written to the log.
    Such a record says who sent what kind of error, without the bytes, and at DEBUG: any
    client can send thousands a second, and the client's error is not the server's."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "malformed HTTP request from %s: %s %s"
            record.args = (remote, exc.code, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def server_logger() -> logging.Logger:
    """The logger for the REST server's own errors (aiohttp's ``logger=``), whose records
    never quote what a client sent."""
    logger = logging.getLogger("gateway.server.http")
    if not any(isinstance(f, _ParseErrorFilter) for f in logger.filters):
        logger.addFilter(_ParseErrorFilter())
    return logger
