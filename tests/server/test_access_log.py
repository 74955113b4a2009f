"""Access-log formats and the server's own log records (server.access_log)."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_log import AccessLogger

from gateway.server import access_log


def test_kserves_format_becomes_aiohttps() -> None:
    assert access_log.aiohttp_format(None) == AccessLogger.LOG_FORMAT
    assert access_log.aiohttp_format("%a %s") == "%a %s"  # already aiohttp's
    gunicorn = '%(h)s "%(r)s" %(s)s %(b)s %(D)s %(m)s %({X-Request-Id}i)s %({Server-Timing}o)s'
    assert access_log.aiohttp_format(gunicorn) == (
        '%a "%r" %s %b %D - %{X-Request-Id}i %{Server-Timing}o'
    )


def test_our_fast_logger_for_the_default_line_only() -> None:
    assert access_log.access_logger_class(None) is access_log.FastAccessLogger
    assert access_log.access_logger_class("%a") is AccessLogger


def _parse_error_record(logger: logging.Logger, text: str) -> logging.LogRecord:
    """The record aiohttp makes for a request it cannot parse, quoting `text`."""
    try:
        raise BadHttpMessage(text)
    except BadHttpMessage:
        import sys

        return logger.makeRecord(
            logger.name, logging.ERROR, __file__, 0, "Error handling request from %s",
            ("10.0.0.1",), sys.exc_info(),
        )  # fmt: skip


def test_a_request_that_cannot_be_parsed_is_logged_without_its_bytes() -> None:
    logger = access_log.server_logger()
    assert access_log.server_logger() is logger
    assert len(logger.filters) == 1, "the filter is added once"
    secret = "Authorization: Bearer s3cr3t"
    record = _parse_error_record(logger, secret)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert logger.filters[0].filter(record)
    finally:
        logger.setLevel(level)
    assert record.getMessage() == "malformed HTTP request from 10.0.0.1: 400 BadHttpMessage"
    assert record.levelno == logging.DEBUG  # a client can send thousands: not an ERROR
    assert record.exc_info is None
    assert secret not in record.getMessage()


def test_a_request_that_cannot_be_parsed_is_not_logged_above_debug() -> None:
    logger = access_log.server_logger()
    record = _parse_error_record(logger, "junk")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert not logger.filters[0].filter(record)
    finally:
        logger.setLevel(level)
