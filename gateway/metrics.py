"""Prometheus metrics: requests per model and protocol, time per stage and per hop.

Stage histograms keep KServe's names (``request_predict_seconds`` ...) so existing dashboards
keep working. With several worker processes the metrics live in files shared through
``PROMETHEUS_MULTIPROC_DIR`` and `exposition` adds them up across workers; there
``gateway_requests_total`` also carries each worker's ``pid``, so how the kernel spread the
connections shows (and a worker that never serves), at no cost per request.

With tracing on, the request and hop histograms carry the trace id of a sampled request as an
exemplar, shown when ``/metrics`` is scraped as OpenMetrics (``Accept:
application/openmetrics-text``); with several workers through `gateway.metrics_exemplars`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder

from gateway import metrics_tally, tracing_ids
from gateway.metrics_exemplars import SharedExemplars
from gateway.metrics_tally import Tally
from gateway.request_context import RequestContext

STAGES = ("preprocess", "predict", "explain", "postprocess")

# Wide enough for both a 50 us pass-through and a 30 s model.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    float("inf"),
)


M = TypeVar("M")

# Collectors made by `registered_once`, per registry and per kind.
_ONCE: weakref.WeakKeyDictionary[CollectorRegistry, dict[Callable[..., Any], Any]] = (
    weakref.WeakKeyDictionary()
)


def registered_once(kind: Callable[[CollectorRegistry], M], registry: CollectorRegistry) -> M:
    """``kind(registry)``, made once per registry (a registry refuses a metric registered
    twice): every hop of a server shares it."""
    made = _ONCE.setdefault(registry, {})
    if kind not in made:
        made[kind] = kind(registry)
    collectors: M = made[kind]
    return collectors


class Metrics:
    """The gateway's metrics, in a registry of their own (one per server)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.exemplars: SharedExemplars | None = None
        if multiprocess_dir is not None:
            # prometheus_client picks its value storage when first imported; switch it to the
            # shared files before any metric below is created.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
            self.exemplars = SharedExemplars(multiprocess_dir)
            values.ValueClass = self.exemplars.value_class()
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # First: the request path's observations are tallied, and handed over before any
        # metric is collected (at once with workers: another worker's scrape reads them).
        self.tallies = metrics_tally.tallies(registry, direct=multiprocess_dir is not None)
        self.stage_seconds = {
            stage: Histogram(
                f"request_{stage}_seconds",
                f"{stage} latency",
                ["model_name"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
            for stage in STAGES
        }
        # A worker's own series: its pid is a label value fixed for the process, so the cached
        # children below cost nothing more per request.
        self._worker = () if multiprocess_dir is None else (str(os.getpid()),)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by model, inbound protocol and status (and worker pid)",
            ["model_name", "protocol", "code", *(["pid"] if self._worker else [])],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_seconds",
            "Time from request received to response ready",
            ["model_name", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.hop_seconds = Histogram(
            "gateway_hop_seconds",
            "Time of each attempt on a hop to an upstream",
            ["model_name", "hop", "protocol", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.hop_retries = Counter(
            "gateway_hop_retries",
            "Attempts on a hop that were retried, by reason",
            ["model_name", "hop", "reason"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "gateway_connections_closed",
            "Client connections the gateway closed on its own, by reason (max_connections, "
            "write_timeout, write_buffer)",
            ["reason"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Tally, Tally]] = {}
        self._stage_children: dict[tuple[str, str], Tally | None] = {}
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests being served",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe(self, model_name: str, context: RequestContext, code: str, seconds: float) -> None:
        """Record one finished request and the stages it went through."""
        key = (model_name, context.protocol, code)
        children = self._children.get(key)
        if children is None:
            # labels() costs a lock and a dict build per call: look each series up once.
            children = self._children[key] = (
                self.tallies.of(self.requests.labels(*key, *self._worker)),
                self.tallies.of(self.request_seconds.labels(model_name, context.protocol)),
            )
        children[0].inc()
        # The exemplar points at the request's SERVER span.
        children[1].observe(
            seconds, None if context.tracer is None else tracing_ids.exemplar(context.span)
        )
        for stage, stage_seconds in context.timings:
            histogram = self._stage_child(stage, model_name)
            if histogram is not None:
                histogram.observe(stage_seconds)

    def _stage_child(self, stage: str, model_name: str) -> Tally | None:
        key = (stage, model_name)
        try:
            return self._stage_children[key]
        except KeyError:
            histogram = self.stage_seconds.get(stage)  # none for a hop's timing
            child = None if histogram is None else self.tallies.of(histogram.labels(model_name))
            self._stage_children[key] = child
            return child

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics text and its content type, summed over workers when there are several:
        OpenMetrics (with exemplars) when `accept` (the scraper's Accept header) asks for it,
        Prometheus' text format otherwise."""
        encode, content_type = choose_encoder(accept)
        self.tallies.flush()  # the merged registry below does not flush this worker's
        if self.exemplars is None:
            return encode(self.registry), content_type
        files = multiprocess.MultiProcessCollector(None, path=self.exemplars.directory)  # type: ignore[no-untyped-call]
        merged = CollectorRegistry()
        merged.register(self.exemplars.collector(files))
        return encode(merged), content_type
