"""Log output: lines written in batches, in order, none stranded; a sampled
request's lines name its trace, in the plain and the JSON format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from gateway import logs


class CountingStream(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    out = CountingStream()
    handler = logs.BatchedStreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def test_lines_of_several_loop_iterations_are_one_write(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    for i in range(5):
        logs.info(logger, "line %d", i)
        await asyncio.sleep(0)  # requests served apart still share a write
    assert stream.writes == 0  # held until the flush comes round
    await asyncio.sleep(logs.FLUSH_SECONDS * 2)
    assert stream.writes == 1
    assert _lines(stream) == [f"INFO line {i}" for i in range(5)]


async def test_lines_past_the_size_bound_are_written_at_once(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    line = "x" * 1000
    for _ in range(logs.FLUSH_BYTES // 1000 + 1):
        logs.info(logger, line)
    assert stream.writes == 1
    assert _lines(stream) == [f"INFO {line}"] * (logs.FLUSH_BYTES // 1000 + 1)


async def test_a_warning_is_written_at_once_after_what_is_pending(
    stream: CountingStream,
) -> None:
    logger = logging.getLogger("tests.logs")
    logger.info("first")
    logger.warning("then this")
    assert _lines(stream) == ["INFO first", "WARNING then this"]


def test_lines_off_the_loop_are_written_at_once(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    logger.info("no loop here")
    assert _lines(stream) == ["INFO no loop here"]
    thread = threading.Thread(target=logger.info, args=("from a thread",))
    thread.start()
    thread.join()
    assert _lines(stream)[-1] == "INFO from a thread"


def test_a_line_left_by_a_loop_that_stopped_is_not_stranded(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")

    loop = asyncio.new_event_loop()

    def log_and_leave() -> None:
        logger.info("last words")  # its flush is scheduled on a loop that then stops
        loop.stop()

    loop.call_soon(log_and_leave)
    loop.run_forever()
    loop.close()
    assert _lines(stream) == []

    async def next_loop() -> None:
        logger.info("next")  # the next loop's first line writes the stranded one

    asyncio.run(next_loop())
    assert _lines(stream) == ["INFO last words", "INFO next"]


def test_the_formatter_formats_as_logging_does() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelno": logging.INFO, "levelname": "INFO", "msg": "m %s", "args": (1,)}
    )
    ours, stdlib = logs.Formatter(), logging.Formatter(logs.FORMAT)
    assert ours.format(record) == stdlib.format(record)
    record.created += 1.5  # another second: the cached date moves on
    record.msecs = 500.0
    assert ours.format(record) == stdlib.format(record)
    dated = logs.Formatter(datefmt="%Y")
    assert dated.format(record) == logging.Formatter(logs.FORMAT, "%Y").format(record)


def test_info_skips_a_disabled_level(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    logger.setLevel(logging.WARNING)
    logs.info(logger, "dropped")
    assert _lines(stream) == []


TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"


def test_a_traced_line_ends_with_its_ids_in_every_text_format(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    logs.info(logger, "served %s", "r1", trace=(TRACE, SPAN))
    logs.info(logger, "served %s", "r2")
    assert _lines(stream) == [f"INFO served r1 trace_id={TRACE} span_id={SPAN}", "INFO served r2"]


def test_json_lines_name_the_trace_as_keys() -> None:
    logger = logging.getLogger("tests.logs.json")
    traced = logs.traced_record(logger, "served %s", ("r1",), (TRACE, SPAN))
    line = json.loads(logs.JsonFormatter().format(traced))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": "tests.logs.json",
        "message": "served r1",
        "trace_id": TRACE,
        "span_id": SPAN,
    }
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    failed = json.loads(logs.JsonFormatter().format(record))
    assert failed["message"] == "failed"
    assert "trace_id" not in failed
    assert failed["exception"].endswith("ValueError: boom")


def test_configure_picks_the_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    logs.configure(logging.INFO, "json")
    (handler,) = root.handlers
    assert isinstance(handler.formatter, logs.JsonFormatter)
    with pytest.raises(ValueError, match="log format must be one of plain, json"):
        logs.configure(logging.INFO, "yaml")


def test_a_logging_config_can_name_the_json_formatter() -> None:
    """What ``--log_config_file`` users write to get JSON lines."""
    configurator = logging.config.DictConfigurator({"version": 1})
    formatter = configurator.configure_formatter({"()": "gateway.logs.JsonFormatter"})
    assert isinstance(formatter, logs.JsonFormatter)


@pytest.mark.parametrize("trace", [None, ("ab" * 16, "cd" * 8)])
def test_a_line_built_without_a_record_is_the_formatters_line(
    monkeypatch: pytest.MonkeyPatch, trace: tuple[str, str] | None
) -> None:
    """`info` builds a line itself when it goes to one batched handler with the default
    format: the text is what logging's own path writes, to the millisecond."""
    out, reference = io.StringIO(), io.StringIO()
    handler = logs.BatchedStreamHandler(out)
    handler.setFormatter(logs.Formatter())
    logger = logging.getLogger("tests.logs.direct")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    monkeypatch.setattr(logs.time, "time", lambda: 1_700_000_000.987654)
    try:
        assert logs._direct_handler(logger) == (handler, handler.formatter)
        logs.info(logger, "id: %s, ms: %.3f", "r1", 1.23456, trace=trace)
        # logging's own path: a record through a formatter of the same format.
        if trace is None:
            record = logger.makeRecord(logger.name, logging.INFO, "f", 0, "id: %s, ms: %.3f",
                                       ("r1", 1.23456), None)  # fmt: skip
        else:
            record = logs.traced_record(logger, "id: %s, ms: %.3f", ("r1", 1.23456), trace)
        reference.write(logs.Formatter().format(record) + "\n")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert out.getvalue() == reference.getvalue()
    assert ",987 INFO tests.logs.direct: id: r1, ms: 1.235" in out.getvalue()


def test_a_line_with_a_filter_on_its_way_goes_through_logging(stream: CountingStream) -> None:
    logger = logging.getLogger("tests.logs")
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    logger.addFilter(keep)
    try:
        assert logs._direct_handler(logger) is None
        logs.info(logger, "x %s", 1)
    finally:
        logger.removeFilter(keep)
    assert seen == ["x 1"]
