"""Log output that costs a request little: two INFO lines per request (access and latency)
would otherwise be two `write` system calls, two timestamp formattings and two stack walks.

- `BatchedStreamHandler` joins the lines the event loop writes within `FLUSH_SECONDS` into
  one `write` (a busy gateway writes a line or two per request, a `write` system call each:
  batched by iteration, a partly loaded one still made one or two per request); more than
  `FLUSH_BYTES` pending, a WARNING or worse, a line from another thread, a `flush()` and
  logging's shutdown write at once (after what is pending, so the order holds). A process
  killed outright loses at most the lines of its last `FLUSH_SECONDS`.
- `Formatter` formats the date part of ``%(asctime)s`` once a second.
- `info` logs a line without looking up its caller (for lines whose format prints none);
  when the line's only way out is a `BatchedStreamHandler` with the default plain format (as
  `configure` sets up), it builds the text itself, without a `LogRecord` (about half of a
  line's cost), exactly as the formatter would have.

A line of a sampled request names its trace as OpenTelemetry's logging instrumentation does:
``trace_id=<32 hex> span_id=<16 hex>`` at the end of the message, or ``"trace_id"`` /
``"span_id"`` keys with `JsonFormatter` (``--log_format json``). Only such lines are built
differently (a `TracedRecord`), so lines of requests not traced cost nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

__all__ = [
    "FORMATS",
    "BatchedStreamHandler",
    "Formatter",
    "JsonFormatter",
    "TracedRecord",
    "configure",
    "configure_process",
    "info",
]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("plain", "json")
# How long an event loop's INFO lines may wait to be written together, and how much text.
FLUSH_SECONDS = 0.05
FLUSH_BYTES = 1 << 16


class TracedRecord(logging.LogRecord):
    """A record of a sampled request: ``trace_id`` and ``span_id`` (hex) as attributes, and
    at the end of its message, so that every text format shows them."""

    trace_id: str
    span_id: str

    def getMessage(self) -> str:
        return f"{self.plain_message()} trace_id={self.trace_id} span_id={self.span_id}"

    def plain_message(self) -> str:
        """The message without the ids (a JSON line has them as keys)."""
        return super().getMessage()


def traced_record(
    logger: logging.Logger, msg: str, args: Any, ids: tuple[str, str]
) -> TracedRecord:
    """An INFO record of `logger` naming the trace `ids` (trace_id, span_id)."""
    record = TracedRecord(logger.name, logging.INFO, __file__, 0, msg, args, None)
    record.trace_id, record.span_id = ids
    return record


class Formatter(logging.Formatter):
    """`logging.Formatter` whose default timestamp is formatted once a second."""

    def __init__(self, fmt: str | None = FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._second = -1
        self._stamp = ""
        self._milli: float = -1
        self._milli_stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float | None = None) -> str:
        """``%(asctime)s`` of a line logged at `created` (time.time()), with no datefmt;
        `msecs` as its record has them (default: computed as a record computes them)."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
            self._milli = -1
        if self.default_msec_format is None:
            return self._stamp
        if msecs is None:
            msecs = int((created - second) * 1000)  # as LogRecord computes them
        if msecs != self._milli:  # (a request's lines often fall in one millisecond)
            self._milli = msecs
            self._milli_stamp = self.default_msec_format % (self._stamp, msecs)
        return self._milli_stamp


class JsonFormatter(Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``trace_id`` / ``span_id`` on a sampled request's lines, ``exception`` when there is one."""

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"
    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record, TracedRecord):
            entry = self._entry(record, record.plain_message())
            entry["trace_id"] = record.trace_id
            entry["span_id"] = record.span_id
        else:
            entry = self._entry(record, record.getMessage())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry).decode()

    def _entry(self, record: logging.LogRecord, message: str) -> dict[str, str]:
        return {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the event loop's lines at most every `FLUSH_SECONDS`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # whose flush is scheduled
        self._flush_thread = 0  # the thread it runs in

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # Called under the handler's lock.
        self._add(line, record.levelno >= logging.WARNING)

    def emit_text(self, line: str, warning: bool = False) -> None:
        """`emit` for a line already formatted (without its terminator)."""
        with self.lock:  # type: ignore[union-attr]  # (made by the handler's __init__)
            self._add(line + self.terminator, warning)

    def _add(self, line: str, at_once: bool) -> None:
        """Hold `line` for the scheduled write, or write it now (under the handler's lock)."""
        self._pending.append(line)
        self._pending_bytes += len(line)
        if not at_once and self._pending_bytes < FLUSH_BYTES:
            scheduled = self._flush_loop
            # Its flush is scheduled on the loop running in this thread. (Checked without
            # asyncio.get_running_loop(), which makes a getpid system call.)
            if (
                scheduled is not None
                and self._flush_thread == threading.get_ident()
                and scheduled.is_running()
            ):
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop's thread: nothing would flush it
                loop = None
            if loop is not None and scheduled is None:
                loop.call_later(FLUSH_SECONDS, self.flush)
                self._flush_loop = loop
                self._flush_thread = threading.get_ident()
                return
        # Also when the pending lines wait on another loop's flush, which may never run.
        self._write_pending()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def _write_pending(self) -> None:
        self._flush_loop = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            # Reported as logging reports a failed write (to stderr, once per failure).
            self.handleError(logging.makeLogRecord({"msg": text.rstrip("\n")}))


def configure(level: int = logging.INFO, log_format: str = "plain") -> None:
    """What `logging.basicConfig(level=...)` does, with our handler and formatter (plain
    text, or one JSON object a line)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    root = logging.getLogger()
    handler = BatchedStreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else Formatter())
    root.addHandler(handler)
    root.setLevel(level)


def info(
    logger: logging.Logger, msg: str, *args: Any, trace: tuple[str, str] | None = None
) -> None:
    """`logger.info(msg, *args)` without finding the caller's file and line (a stack walk),
    for lines logged once per request; `trace` is the (trace_id, span_id) of a sampled
    request."""
    if logger.isEnabledFor(logging.INFO):
        direct = _direct_handler(logger)
        # One mapping argument is logging's "%(key)s" form: left to logging.
        if direct is not None and not (len(args) == 1 and isinstance(args[0], Mapping)):
            handler, formatter = direct
            now = time.time()
            message = msg % args if args else msg
            if trace is not None:
                message = f"{message} trace_id={trace[0]} span_id={trace[1]}"
            stamp = formatter.stamp(now)
            handler.emit_text(f"{stamp} INFO {logger.name}: {message}")
            return
        if trace is None:
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, msg, args, None)
        else:
            record = traced_record(logger, msg, args, trace)
        logger.handle(record)


def _direct_handler(logger: logging.Logger) -> tuple[BatchedStreamHandler, Formatter] | None:
    """The handler and formatter an INFO line of `logger` goes to, when that is all that
    happens to it: no filters on the way, one `BatchedStreamHandler` with the default plain
    `Formatter` (as `configure` sets up). None otherwise: the line goes through logging."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if len(current.handlers) != 1 or (current.propagate and current.parent is not None):
                return None
            handler = current.handlers[0]
            formatter = handler.formatter
            if (
                type(handler) is BatchedStreamHandler
                and not handler.filters
                and handler.level <= logging.INFO
                and type(formatter) is Formatter
                and formatter._fmt == FORMAT
                and formatter.datefmt is None
            ):
                return handler, formatter
            return None
        current = current.parent if current.propagate else None
    return None


def configure_process(config_file: str | None, log_format: str) -> None:
    """Logging for a server process: `config_file` (JSON, `logging.config.dictConfig`) if
    given, else `configure` at INFO unless the root logger already has handlers."""
    # Every record would otherwise look up its thread, process and source line: a cost per
    # request (access and latency lines) that no default format prints.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if config_file:
        from logging import config

        with open(config_file, "rb") as handle:
            config.dictConfig(orjson.loads(handle.read()))
    elif not logging.getLogger().handlers:
        configure(logging.INFO, log_format)
