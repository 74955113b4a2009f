"""Where the time of many traces went: per service, stage and hop, the p50 and p99 over the
traces, and the slowest trace. Pure functions over `gateway.waterfall` records, shared by the
``/traces`` page (one process's buffer) and the demo's report (a chain's merged traces)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from gateway import lazy_numpy
from gateway.waterfall import SpanRecord, TraceRecord, duration_ms, rows

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_numpy.bind(globals())

__all__ = ["RowPath", "StageRow", "StageTimes", "slowest", "stage_rows", "stage_times"]


# A row of the table: its key ("A.preprocess", "A->B wire", ...) and its parents' keys.
RowPath = tuple[str, ...]


@dataclass
class StageTimes:
    """Per row, its milliseconds in each trace that had it; rows in tree order (a row's place
    is its path of keys from the root: one stage reached two ways, as one service through two
    steps of a graph, is two rows), siblings in the order they first appeared."""

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


class StageRow(NamedTuple):
    """One stage's line of the summary: how many traces had it, its p50 and p99 in ms."""

    name: str
    depth: int
    traces: int
    p50: float
    p99: float


def stage_times(traces: Sequence[TraceRecord], labels: Mapping[str, str]) -> StageTimes:
    """Where the time of `traces` went, per service (named by `labels`, else by itself; one
    labelled "" has its stages unprefixed) and stage; each hop whose upstream's spans are in
    the trace also gets a "wire" row: its CLIENT span less the upstream's SERVER span, i.e.
    the network plus both ends' encoding and decoding."""
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
            stage = f"{prefix}.{_stage(span)}" if prefix else _stage(span)
            path = (*paths.get(span["parent_id"] or "", ()), stage)
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


def stage_rows(times: StageTimes) -> list[StageRow]:
    """One row per stage: how many traces had it, its p50 and p99 milliseconds."""
    found = []
    for path in times.rows:
        values = times.values[path]
        p50, p99 = np.percentile(values, [50, 99])
        found.append(StageRow(path[-1], len(path) - 1, len(values), float(p50), float(p99)))
    return found


def slowest(traces: Sequence[TraceRecord]) -> TraceRecord | None:
    """The trace that took longest, first to last span; None when there is none."""
    return max(traces, key=lambda trace: trace["end_ns"] - trace["start_ns"], default=None)


def _add(times: StageTimes, spent: dict[RowPath, float], path: RowPath, ms: float) -> None:
    times.add(path)
    # Retries make several spans of one stage in a trace: the stage took their sum.
    spent[path] = spent.get(path, 0.0) + ms


def _stage(span: SpanRecord) -> str:
    if span["kind"] == "SERVER":
        return "server"
    return span["name"].replace(" ", ".")  # "hop predictor" -> "hop.predictor"
