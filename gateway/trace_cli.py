"""``gateway trace``: the recent traces of one or more gateways, as terminal waterfalls.

Each ``--url`` is a gateway started with ``--trace_buffer``; their ``/traces.json`` are
merged by trace id, so a chain of gateways (and its predictor) shows as one tree per request.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
from typing import Any, cast

import orjson

from gateway.flag_types import at_least
from gateway.waterfall import TraceRecord, merge, text

__all__ = ["TraceSourceError", "add_parser", "fetch", "run"]


class TraceSourceError(Exception):
    """A ``--url`` gave no traces: unreachable, no ``--trace_buffer``, or not a gateway."""


def fetch(url: str, timeout: float = 10.0) -> list[TraceRecord]:
    """The traces a gateway at `url` (``http://HOST:PORT``, or ``HOST:PORT``) keeps."""
    if "://" not in url:
        url = f"http://{url}"
    address = f"{url.rstrip('/')}/traces.json"
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            document: Any = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise TraceSourceError(
                f"{url} keeps no traces (start it with --trace_buffer N)"
            ) from None
        raise TraceSourceError(f"{address}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        raise TraceSourceError(f"{address}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("traces"), list):
        raise TraceSourceError(f"{address} is not a gateway's trace list")
    return cast(list[TraceRecord], document["traces"])


def run(args: argparse.Namespace) -> int:
    sources = []
    for url in args.url:
        try:
            sources.append(fetch(url, args.timeout))
        except TraceSourceError as exc:
            print(f"gateway trace: {exc}", file=sys.stderr)
    if not sources:
        return 1
    traces = merge(sources, args.last)
    if not traces:
        print("no traces yet: send a request through the gateway, then run this again")
        return 0
    columns = args.width or shutil.get_terminal_size((120, 24)).columns
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    bar = "█" if encoding.startswith("utf") else "#"
    for index, trace in enumerate(traces):
        if index:
            print()
        print("\n".join(text(trace, columns, bar)))
    return 0


def add_parser(commands: Any) -> None:
    """Add the ``trace`` command to the CLI's subcommands."""
    trace = commands.add_parser(
        "trace",
        help="show the recent traces of gateways started with --trace_buffer",
        description="Print the recent traces of gateways started with --trace_buffer as "
        "waterfalls. Give every gateway of a chain (and its predictor) with --url: their "
        "spans are merged by trace id into one tree per request.",
    )
    trace.add_argument(
        "--url",
        action="append",
        required=True,
        help="a gateway's REST address, HOST:PORT or http://HOST:PORT (repeat for every "
        "gateway of a chain)",
    )
    trace.add_argument(
        "--last", type=at_least(1), default=5, help="how many recent traces (default: %(default)s)"
    )
    trace.add_argument(
        "--width", type=int, default=0, help="line width in columns (default: the terminal's)"
    )
    trace.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per --url (default: %(default)s)"
    )
    trace.set_defaults(run=run)
