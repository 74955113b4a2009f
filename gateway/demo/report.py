"""The demo's report: per-stage and per-hop latency out of every process's ``/traces.json``
(merged by trace id, so one request is one tree across the processes) for the transformer
chain and for the inference graph, the client's own view per protocol, a request of each
drawn as a waterfall, and where to look next.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import numpy as np

from gateway.demo.load import KINDS, LoadResult
from gateway.demo.topology import GRAPH_SERVICE, Child, DemoError
from gateway.server.traces_view import page
from gateway.trace_cli import TraceSourceError, fetch
from gateway.trace_stats import StageTimes, stage_rows, stage_times
from gateway.waterfall import TraceRecord, merge, text

__all__ = ["collect", "print_report"]

# How many merged traces the HTML file draws: enough to scroll through, small enough to open.
HTML_TRACES = 50


def collect(children: Mapping[str, Child], since_ns: int = 0) -> list[TraceRecord]:
    """Every child's recent traces, merged by trace id; only those started at `since_ns`
    or later (the warm-up requests came before)."""
    try:
        merged = merge([fetch(child.url) for child in children.values()])
    except TraceSourceError as exc:
        raise DemoError(f"cannot collect the traces: {exc}") from exc
    return [trace for trace in merged if trace["start_ns"] >= since_ns]


def _is_explanation(trace: TraceRecord) -> bool:
    return any(span["name"] == "explain" for span in trace["spans"])


def _is_graph(trace: TraceRecord) -> bool:
    return any(span["service"] == GRAPH_SERVICE for span in trace["spans"])


def _has_span(trace: TraceRecord, name: str) -> bool:
    return any(span["name"] == name for span in trace["spans"])


def print_report(
    result: LoadResult,
    traces: list[TraceRecord],
    children: Mapping[str, Child],
    log_dir: Path,
    out: IO[str] = sys.stdout,
) -> None:
    labels = {child.service.service_name: label for label, child in children.items()}
    graph = [trace for trace in traces if _is_graph(trace)]
    chain = [trace for trace in traces if not _is_graph(trace)]
    predictions = [trace for trace in chain if not _is_explanation(trace)]
    explanations = [trace for trace in chain if _is_explanation(trace)]
    for title, chosen in (
        ("Predictions", predictions),
        ("Explanations", explanations),
        ("Graph requests (G: node, step and hop spans)", graph),
    ):
        _stage_table(title, stage_times(chosen, labels), out)
    _client_table(result, out)
    ensembles = [trace for trace in graph if _has_span(trace, "node ensemble")]
    for title, chosen in (
        ("A typical request, every process's spans merged:", predictions),
        ("A typical request to the graph's Ensemble:", ensembles),
    ):
        _typical(title, chosen, out)
    html_path = log_dir / "traces.html"
    html_path.write_text(page(traces[-HTML_TRACES:], "gateway demo: the whole chain"))
    _next_steps(children, html_path, log_dir, out)


def _typical(title: str, traces: list[TraceRecord], out: IO[str]) -> None:
    """The median trace of `traces` (not the fastest or an outlier) as a waterfall."""
    if not traces:
        return
    typical = sorted(traces, key=lambda t: t["end_ns"] - t["start_ns"])
    print(f"\n{title}", file=out)
    encoding = (getattr(out, "encoding", None) or "").lower()
    bar = "█" if encoding.startswith("utf") else "#"
    columns = shutil.get_terminal_size((120, 24)).columns
    print("\n".join(text(typical[len(typical) // 2], columns, bar)), file=out)


def _stage_table(title: str, times: StageTimes, out: IO[str]) -> None:
    if not times.traces:
        return
    print(f"\n{title}: latency per stage and hop over {times.traces} traces", file=out)
    print(f"  {'stage':<38} {'n':>5} {'p50 ms':>9} {'p99 ms':>9}", file=out)
    for row in stage_rows(times):
        name = "  " * row.depth + row.name
        print(f"  {name:<38} {row.traces:>5} {row.p50:>9.2f} {row.p99:>9.2f}", file=out)


def _client_table(result: LoadResult, out: IO[str]) -> None:
    print("\nClient view, end to end per protocol", file=out)
    print(f"  {'request':<38} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}", file=out)
    for kind in KINDS:
        seconds = result.latencies[kind]
        if seconds or result.errors[kind]:
            p50, p99 = np.percentile(seconds, [50, 99]) * 1000 if seconds else (0.0, 0.0)
            print(
                f"  {kind:<38} {len(seconds):>5} {p50:>9.2f} {p99:>9.2f} {result.errors[kind]:>7}",
                file=out,
            )
    rate = result.requests / result.seconds if result.seconds else 0.0
    print(
        f"\n{result.requests} requests in {result.seconds:.2f} s: {rate:.1f} requests/s, "
        f"errors: {result.error_count}",
        file=out,
    )
    if result.first_error:
        print(f"first error: {result.first_error}", file=out)


def _next_steps(children: Mapping[str, Child], html: Path, log_dir: Path, out: IO[str]) -> None:
    urls = " ".join(f"--url {child.url}" for child in children.values())
    lines = [
        "",
        "Where to look next:",
        f"  every request as a waterfall across all the processes: file://{html}",
        "  each process's own view, while it runs (`gateway demo --keep` keeps them up):",
        *(
            f"    {label:<10} {child.url}/traces   {child.url}/metrics"
            for label, child in children.items()
        ),
        f"  the chain in a terminal: gateway trace {urls} --last 3",
        f"  process logs: {log_dir}/",
        "  with Docker: docker compose up --build (the same chain with an MLServer predictor;"
        " traces in Jaeger, http://localhost:16686)",
        "  to your own collector: OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 gateway demo",
    ]
    print("\n".join(lines), file=out)
