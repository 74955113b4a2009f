"""Log output that costs a request little: two INFO lines per request (access and latency)
would otherwise be two `write` system calls, two timestamp formattings and two stack walks.

- `BatchedStreamHandler` joins the lines the event loop writes in one iteration into one
  `write`; a WARNING or worse, a line from another thread, a `flush()` and logging's
  shutdown write at once (after what is pending, so the order holds). A process killed
  outright loses at most the lines of the loop iteration it was in.
- `Formatter` formats the date part of ``%(asctime)s`` once a second.
- `info` logs a line without looking up its caller (for lines whose format prints none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TextIO

__all__ = ["BatchedStreamHandler", "Formatter", "configure", "info"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Formatter(logging.Formatter):
    """`logging.Formatter` whose default timestamp is formatted once a second."""

    def __init__(self, fmt: str | None = FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        if self.default_msec_format is None:
            return self._stamp
        return self.default_msec_format % (self._stamp, record.msecs)


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the event loop's lines once per loop iteration."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # whose flush is scheduled

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # Called under the handler's lock.
        self._pending.append(line)
        if record.levelno < logging.WARNING:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop's thread: nothing would flush it
                loop = None
            if loop is not None and self._flush_loop is loop:
                return  # its flush is scheduled
            if loop is not None and self._flush_loop is None:
                loop.call_soon(self.flush)
                self._flush_loop = loop
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
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            # Reported as logging reports a failed write (to stderr, once per failure).
            self.handleError(logging.makeLogRecord({"msg": text.rstrip("\n")}))


def configure(level: int = logging.INFO) -> None:
    """What `logging.basicConfig(level=...)` does, with our handler and formatter."""
    root = logging.getLogger()
    handler = BatchedStreamHandler()
    handler.setFormatter(Formatter())
    root.addHandler(handler)
    root.setLevel(level)


def info(logger: logging.Logger, msg: str, *args: Any) -> None:
    """`logger.info(msg, *args)` without finding the caller's file and line (a stack walk),
    for lines logged once per request."""
    if logger.isEnabledFor(logging.INFO):
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, msg, args, None))
