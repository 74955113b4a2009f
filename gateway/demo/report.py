"""The demo's report: per-stage and per-hop latency out of every process's ``/traces.json``
(merged by trace id, so one request is one tree across the processes) for the transformer
chain and for the inference graph, the client's own view per protocol, a request of each
drawn as a waterfall, and where to look next.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from gateway.demo.load import KINDS, LoadResult
from gateway.demo.topology import GRAPH_SERVICE, Child, DemoError
from gateway.server.traces_view import page
from gateway.trace_cli import TraceSourceError, fetch
from gateway.waterfall import SpanRecord, TraceRecord, duration_ms, merge, rows, text

__all__ = ["StageTimes", "collect", "print_report", "stage_times"]

# How many merged traces the HTML file draws: enough to scroll through, small enough to open.
HTML_TRACES = 50


# A row of the table: its key ("A.preprocess", "A->B wire", ...) and its parents' keys.
RowPath = tuple[str, ...]


@dataclass
class StageTimes:
    """Per row, its milliseconds in each trace that had it; rows in tree order (a row's
    place is its path of keys from the root: one stage reached two ways, as one service
    through two steps of a graph, is two rows), siblings in the order they first appeared."""

    traces: int = 0
    rows: list[RowPath] = field(default_factory=list)
    values: dict[RowPath, list[float]] = field(default_factory=dict)

    def add(self, path: RowPath) -> None:
        """Make room for row `path`, as the last child of its parent so far."""
        if path in self.values:
            return
        self.values[path] = []
        parent = path[:-1]
        place = len(self.rows)
        if parent:
            place = max(i for i, row in enumerate(self.rows) if row[: len(parent)] == parent) + 1
        self.rows.insert(place, path)


def collect(children: Mapping[str, Child], since_ns: int = 0) -> list[TraceRecord]:
    """Every child's recent traces, merged by trace id; only those started at `since_ns`
    or later (the warm-up requests came before)."""
    try:
        merged = merge([fetch(child.url) for child in children.values()])
    except TraceSourceError as exc:
        raise DemoError(f"cannot collect the traces: {exc}") from exc
    return [trace for trace in merged if trace["start_ns"] >= since_ns]


def stage_times(traces: list[TraceRecord], labels: Mapping[str, str]) -> StageTimes:
    """Where the time of `traces` went, per service (named by `labels`) and stage; each hop
    also gets a "wire" row: its CLIENT span less the upstream's SERVER span, i.e. the
    network plus both ends' encoding and decoding."""
    times = StageTimes(traces=len(traces))
    for trace in traces:
        children: dict[str, list[SpanRecord]] = {}
        for span in trace["spans"]:
            children.setdefault(span["parent_id"] or "", []).append(span)
        paths: dict[str, RowPath] = {}
        spent: dict[RowPath, float] = {}
        for row in rows(trace):
            span = row.span
            prefix = labels.get(span["service"], span["service"])
            path = (*paths.get(span["parent_id"] or "", ()), f"{prefix}.{_stage(span)}")
            paths[span["span_id"]] = path
            _add(times, spent, path, duration_ms(span))
            upstream = [s for s in children.get(span["span_id"], []) if s["kind"] == "SERVER"]
            if span["kind"] == "CLIENT" and upstream:
                target = labels.get(upstream[0]["service"], upstream[0]["service"])
                wire = duration_ms(span) - sum(duration_ms(s) for s in upstream)
                _add(times, spent, (*path, f"{prefix}->{target} wire"), wire)
        for path, milliseconds in spent.items():
            times.values[path].append(milliseconds)
    return times


def _add(times: StageTimes, spent: dict[RowPath, float], path: RowPath, ms: float) -> None:
    times.add(path)
    # Retries make several spans of one stage in a trace: the stage took their sum.
    spent[path] = spent.get(path, 0.0) + ms


def _stage(span: SpanRecord) -> str:
    if span["kind"] == "SERVER":
        return "server"
    return span["name"].replace(" ", ".")  # "hop predictor" -> "hop.predictor"


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
    for path in times.rows:
        values = times.values[path]
        name = "  " * (len(path) - 1) + path[-1]
        p50, p99 = np.percentile(values, [50, 99])
        print(f"  {name:<38} {len(values):>5} {p50:>9.2f} {p99:>9.2f}", file=out)


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
