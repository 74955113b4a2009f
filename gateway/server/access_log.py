"""Access-log formats: KServe's (gunicorn-style ``%(h)s``) turned into aiohttp's atoms."""

from __future__ import annotations

import re

from aiohttp.web_log import AccessLogger

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
