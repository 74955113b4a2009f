"""Where the time of many traces went: per service, stage and hop, the p50 and p99 over the
traces, and the slowest trace. Pure functions over `gateway.waterfall` records, shared by the
``/traces`` page (one process's buffer) and the demo's report (a chain's merged traces)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from gateway.waterfall import SpanRecord, TraceRecord, duration_ms, rows

__all__ = ["StageRow", "StageTimes", "slowest", "stage_rows", "stage_times"]


@dataclass
class StageTimes:
    """Per row ("A.preprocess", "A->B wire", ...): its depth in the tree and its
    milliseconds in each trace that had it, rows in the order they first appeared."""

    traces: int = 0
    depth: dict[str, int] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)


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
        spent: dict[str, float] = {}
        for row in rows(trace):
            span = row.span
            prefix = labels.get(span["service"], span["service"])
            stage = f"{prefix}.{_stage(span)}" if prefix else _stage(span)
            _add(times, spent, stage, row.depth, duration_ms(span))
            upstream = [s for s in children.get(span["span_id"], []) if s["kind"] == "SERVER"]
            if span["kind"] == "CLIENT" and upstream:
                target = labels.get(upstream[0]["service"], upstream[0]["service"])
                wire = duration_ms(span) - sum(duration_ms(s) for s in upstream)
                _add(times, spent, f"{prefix}->{target} wire", row.depth + 1, wire)
        for key, milliseconds in spent.items():
            times.values[key].append(milliseconds)
    return times


def stage_rows(times: StageTimes) -> list[StageRow]:
    """One row per stage: how many traces had it, its p50 and p99 milliseconds."""
    found = []
    for key, values in times.values.items():
        p50, p99 = np.percentile(values, [50, 99])
        found.append(StageRow(key, times.depth[key], len(values), float(p50), float(p99)))
    return found


def slowest(traces: Sequence[TraceRecord]) -> TraceRecord | None:
    """The trace that took longest, first to last span; None when there is none."""
    return max(traces, key=lambda trace: trace["end_ns"] - trace["start_ns"], default=None)


def _add(times: StageTimes, spent: dict[str, float], key: str, depth: int, ms: float) -> None:
    times.depth.setdefault(key, depth)
    times.values.setdefault(key, [])
    # Retries make several spans of one stage in a trace: the stage took their sum.
    spent[key] = spent.get(key, 0.0) + ms


def _stage(span: SpanRecord) -> str:
    if span["kind"] == "SERVER":
        return "server"
    return span["name"].replace(" ", ".")  # "hop predictor" -> "hop.predictor"
