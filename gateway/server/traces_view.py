"""The latency view of ``--trace_buffer``: ``GET /traces`` (a summary of every trace kept,
then an HTML waterfall per recent request) and ``GET /traces.json`` (the same traces as data,
for ``gateway trace``). Without the flag both answer 404 saying how to turn them on.

Only this process's spans are here: a hop's CLIENT span has its upstream's spans in the
upstream's own buffer. ``gateway trace --url A --url B`` merges them into one tree.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.errors import InvalidInput
from gateway.server.rest_common import Route, json_response
from gateway.trace_stats import slowest, stage_rows, stage_times
from gateway.waterfall import Row, TraceRecord, duration_ms, rows, trace_records

if TYPE_CHECKING:
    from gateway.tracing_recent import RecentSpans

__all__ = ["OFF", "OFF_ROUTES", "RECENT_SPANS", "ROUTES", "page"]

# Typed by annotation: the class is an SDK span processor, loaded only with a buffer.
RECENT_SPANS: web.AppKey[RecentSpans] = web.AppKey("recent_spans")

# Traces drawn on the page unless ?last= says otherwise: a page of hundreds is unreadable.
PAGE_TRACES = 20
_TICKS = 4
_KIND_CLASS = {"SERVER": "server", "CLIENT": "client"}


def _last(request: web.Request, default: int | None) -> int | None:
    value = request.query.get("last")
    if value is None:
        return default
    # isdigit alone takes digits int() refuses (superscripts, say).
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise InvalidInput(f"last must be a positive integer, got {value!r}")
    return int(value)


async def _traces_json(request: web.Request) -> web.Response:
    recent = request.app[RECENT_SPANS]
    traces = trace_records(recent.traces(), _last(request, None))
    return json_response({"max_traces": recent.max_traces, "traces": traces})


async def _traces_page(request: web.Request) -> web.Response:
    last = _last(request, PAGE_TRACES)
    kept = trace_records(request.app[RECENT_SPANS].traces())
    traces = kept[-last:] if last is not None else kept
    services = sorted({span["service"] for trace in traces for span in trace["spans"]})
    title = f"Recent traces: {', '.join(services) or 'gateway'}"
    body = page(traces, title, len(kept), data_url="/traces.json", summary_of=kept)
    return web.Response(text=body, content_type="text/html")


ROUTES = (
    Route("GET", "/traces", _traces_page, "Recent requests as span waterfalls (HTML)"),
    Route("GET", "/traces.json", _traces_json, "Recent traces: spans with timings (JSON)"),
)

OFF = (
    "the latency view is off: start the gateway with --trace_buffer N (200, say) to keep "
    "its last N traces here"
)


async def _off_page(request: web.Request) -> web.Response:
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Recent traces: off</title></head>\n"
        f"<body style='font-family: system-ui, sans-serif; margin: 1.5rem 2rem'>"
        f"<h1>Recent traces: off</h1>\n<p>{html.escape(OFF[0].upper() + OFF[1:])}.</p>\n"
        "<p>Example: <code>gateway serve --trace_buffer 200 ...</code>, send a few requests, "
        "then reload this page.</p>\n</body></html>\n"
    )
    return web.Response(status=404, text=text, content_type="text/html")


async def _off_json(request: web.Request) -> web.Response:
    return json_response({"error": OFF}, 404)


# Served without --trace_buffer: a bare 404 would not say how to get the view.
OFF_ROUTES = (
    Route("GET", "/traces", _off_page, "Recent traces: off (start with --trace_buffer N)"),
    Route("GET", "/traces.json", _off_json, "Recent traces: off (start with --trace_buffer N)"),
)


# The page


def page(
    traces: list[TraceRecord],
    title: str,
    kept: int | None = None,
    data_url: str | None = None,
    summary_of: list[TraceRecord] | None = None,
) -> str:
    """A self-contained HTML page: a summary of `summary_of` (default: `traces`), then one
    waterfall per trace, newest first. `kept`: how many there are in all (a link shows
    them); `data_url`: where the same traces are as JSON."""
    shown = len(traces)
    summary = f"{shown} trace{'s' * (shown != 1)}, newest first"
    if kept is not None and kept > shown:
        summary += f" (of {kept} kept; <a href='?last={kept}'>show all</a>)"
    summary += ". Each row is a span, indented under its parent, on its trace's time axis"
    summary += "; hover a name for its attributes"
    if data_url is not None:
        summary += f'. Data: <a href="{html.escape(data_url)}">{html.escape(data_url)}</a>'
        summary += (
            ". A hop's upstream keeps its own spans: <code>gateway trace --url</code> this"
            " gateway <code>--url</code> its upstreams draws the chain as one tree"
        )
    sections = "\n".join(_waterfall(trace) for trace in reversed(traces))
    if not sections:
        return _PAGE.format(title=html.escape(title), overview="", summary=summary,
                            body="<p>No traces yet: send a request, then reload.</p>")  # fmt: skip
    everything = traces if summary_of is None else summary_of
    shown_ids = {trace["trace_id"] for trace in traces}
    overview = _summary(everything, shown_ids, len(everything))
    return _PAGE.format(title=html.escape(title), overview=overview, summary=summary, body=sections)


def _summary(traces: list[TraceRecord], shown: set[str], kept: int) -> str:
    """p50 / p99 per stage and hop over `traces`, and the slowest of them (linked)."""
    services = {span["service"] for trace in traces for span in trace["spans"]}
    # One process's own buffer has one service: its name before every row says nothing.
    labels = dict.fromkeys(services, "") if len(services) == 1 else {}
    table = "\n".join(
        f"<tr><td style='padding-left:{0.3 + 1.2 * row.depth:.1f}em'>"
        f"{html.escape(row.name)}</td><td>{row.traces}</td>"
        f"<td>{row.p50:.2f}</td><td>{row.p99:.2f}</td></tr>"
        for row in stage_rows(stage_times(traces, labels))
    )
    worst = slowest(traces)
    about = ""
    if worst is not None:
        anchor = f"#t-{worst['trace_id']}"
        link = anchor if worst["trace_id"] in shown else f"?last={kept}{anchor}"
        root = rows(worst)[0].span if worst["spans"] else None
        name = html.escape(root["name"]) if root is not None else "trace"
        total = (worst["end_ns"] - worst["start_ns"]) / 1e6
        about = (
            f"<p class='slowest'>Slowest: <a href='{link}'>{name}, {total:.2f} ms</a> "
            f"(trace <code>{worst['trace_id']}</code> at {_clock(worst['start_ns'])} UTC)</p>"
        )
    count = len(traces)
    return f"""<section class="summary">
<h2>Latency per stage and hop over the {count} trace{"s" * (count != 1)} kept</h2>
<table><thead><tr><th>stage</th><th>n</th><th>p50 ms</th><th>p99 ms</th></tr></thead>
<tbody>
{table}
</tbody></table>
{about}
</section>
"""


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _waterfall(trace: TraceRecord) -> str:
    start, end = trace["start_ns"], trace["end_ns"]
    total = max(end - start, 1)
    laid_out = rows(trace)
    root = laid_out[0].span if laid_out else trace["spans"][0]
    when = _clock(start)
    services = sorted({span["service"] for span in trace["spans"]})
    ticks = "".join(
        f"<span style='left:{100 * i / _TICKS:.1f}%'>{total * i / _TICKS / 1e6:.2f} ms</span>"
        for i in range(_TICKS + 1)
    )
    lines = "\n".join(_row(row, start, total) for row in laid_out)
    trace_id = trace["trace_id"]
    return f"""<section class="waterfall" id="t-{trace_id}" data-trace-id="{trace_id}">
<h2>{html.escape(root["name"])} <span class="total">{total / 1e6:.2f} ms</span></h2>
<p class="meta">trace <code>{trace["trace_id"]}</code> at {when} UTC,
{len(trace["spans"])} spans from {html.escape(", ".join(services))}</p>
<div class="grid">
<div></div><div></div><div class="axis">{ticks}</div><div></div>
{lines}
</div></section>"""


def _row(row: Row, trace_start: int, total: int) -> str:
    span = row.span
    left = 100 * (span["start_ns"] - trace_start) / total
    width = 100 * (span["end_ns"] - span["start_ns"]) / total
    kind = "error" if span["status"] == "ERROR" else _KIND_CLASS.get(span["kind"], "internal")
    details = "\n".join(f"{key} = {value}" for key, value in span["attributes"].items())
    tooltip = html.escape(f"{span['kind']} span {span['span_id']}\n{details}".strip(), quote=True)
    # A hop says which protocol it spoke: the thing to know when comparing hops.
    protocol = span["attributes"].get("gateway.hop.protocol")
    via = f" <small>via {html.escape(str(protocol))}</small>" if protocol else ""
    # And which replica of its pool it went to.
    peer = span["attributes"].get("network.peer.address")
    if peer:
        port = span["attributes"].get("network.peer.port")
        replica = f"{peer}:{port}" if port else str(peer)
        via += f" <small class='replica'>to {html.escape(replica)}</small>"
    return (
        f"<div class='label' style='padding-left:{0.3 + 1.2 * row.depth:.1f}em' "
        f"title='{tooltip}'>{html.escape(span['name'])}{via}</div>"
        f"<div class='service'>{html.escape(span['service'])}</div>"
        f"<div class='track'><div class='bar {kind}' "
        f"style='left:{left:.2f}%;width:{width:.2f}%'></div></div>"
        f"<div class='dur'>{duration_ms(span):.2f} ms</div>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; }}
h1 {{ font-size: 1.4rem; }}
h2 {{ font-size: 1.05rem; margin: 0; }}
.total {{ color: #555; font-weight: normal; }}
.meta {{ color: #666; font-size: .8rem; margin: .2rem 0 .5rem; }}
.legend span {{ display: inline-block; margin-right: 1rem; }}
.legend i {{ display: inline-block; width: .9em; height: .9em; margin-right: .3em;
  vertical-align: middle; border-radius: 2px; }}
section.waterfall {{ border-top: 1px solid #ddd; padding: .8rem 0; }}
.grid {{ display: grid; grid-template-columns: minmax(14rem, 26%) max-content 1fr 5.5rem;
  column-gap: .6rem;
  row-gap: 2px; font-size: .85rem; }}
.label {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.label small, .service {{ color: #888; font-size: .75rem; }}
.axis {{ position: relative; height: 1.1rem; border-bottom: 1px solid #bbb;
  font-size: .7rem; color: #777; }}
.axis span {{ position: absolute; transform: translateX(-50%); white-space: nowrap; }}
.axis span:first-child {{ transform: none; }}
.axis span:last-child {{ transform: translateX(-100%); }}
.track {{ position: relative; height: 1.1rem;
  background: repeating-linear-gradient(90deg, #f4f4f4 0 1px, transparent 1px 25%); }}
.bar {{ position: absolute; top: 2px; bottom: 2px; min-width: 2px; border-radius: 2px; }}
.dur {{ text-align: right; font-variant-numeric: tabular-nums; }}
section.summary table {{ border-collapse: collapse; font-size: .85rem; margin: .4rem 0; }}
section.summary th, section.summary td {{ padding: .1rem .8rem .1rem .3rem; text-align: right;
  font-variant-numeric: tabular-nums; }}
section.summary th:first-child, section.summary td:first-child {{ text-align: left; }}
section.summary tbody tr:nth-child(odd) {{ background: #f6f6f6; }}
.slowest {{ font-size: .9rem; }}
.server {{ background: #4a7fd6; }}
.client {{ background: #e69a2e; }}
.internal {{ background: #5bab6b; }}
.error {{ background: #d64a4a; }}
</style></head>
<body><h1>{title}</h1>
{overview}
<p>{summary}.</p>
<p class="legend"><span><i class="server"></i>served request</span>
<span><i class="internal"></i>stage</span><span><i class="client"></i>hop to an upstream</span>
<span><i class="error"></i>failed</span></p>
{body}
</body></html>
"""
