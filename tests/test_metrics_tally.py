"""Tallied observations (gateway.metrics_tally): a scrape shows exactly what prometheus-client's
own observe and inc would have, exemplars included; an event loop hands them over on its own
within the flush interval; with workers (direct tallies) each is handed over at once."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from gateway import metrics_tally
from gateway.metrics import LATENCY_BUCKETS

# Values on, between, below and beyond the bounds, and the ones that fall in no bucket.
AMOUNTS = [0.0, 0.0001, 0.00010001, 0.001, 0.3, 29.9, 30.0, 1e9, math.inf, -1.0, math.nan]


def _pair() -> tuple[CollectorRegistry, Histogram, Counter, CollectorRegistry]:
    """A registry with tallied metrics (and an empty one, for metrics observed directly)."""
    tallied, direct = CollectorRegistry(), CollectorRegistry()
    metrics_tally.tallies(tallied)
    histogram, counter = _metrics(tallied)
    return tallied, histogram, counter, direct


def _metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    return (
        Histogram("t_seconds", "t", ["m"], buckets=LATENCY_BUCKETS, registry=registry),
        Counter("t_requests", "t", ["m"], registry=registry),
    )


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, round(s.value, 9) if math.isfinite(s.value) else s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def test_a_scrape_shows_what_observing_directly_would() -> None:
    registry, histogram, counter, direct = _pair()
    tallies = metrics_tally.tallies(registry)
    seconds, requests = tallies.of(histogram.labels("a")), tallies.of(counter.labels("a"))
    direct_seconds, direct_requests = _metrics(CollectorRegistry())
    direct.register(direct_seconds)
    direct.register(direct_requests)
    for amount in AMOUNTS:
        seconds.observe(amount)
        direct_seconds.labels("a").observe(amount)
        requests.inc()
        direct_requests.labels("a").inc()
    requests.inc(2.5)
    direct_requests.labels("a").inc(2.5)
    got, wanted = _samples(registry), _samples(direct)
    assert [s for s in got if not _nan(s)] == [s for s in wanted if not _nan(s)]
    assert (
        [s[:2] for s in got if _nan(s)]
        == [s[:2] for s in wanted if _nan(s)]
        == [("t_seconds_sum", {"m": "a"})]
    )


def _nan(sample: tuple[str, dict[str, str], float]) -> bool:
    return sample[2] != sample[2]


def test_each_bucket_keeps_its_latest_exemplar() -> None:
    registry, histogram, _, _ = _pair()
    seconds = metrics_tally.tallies(registry).of(histogram.labels("a"))
    seconds.observe(0.002, {"trace_id": "first"})
    seconds.observe(0.0021, {"trace_id": "second"})
    seconds.observe(0.2)
    text = generate_latest(registry).decode()
    (line,) = [x for x in text.splitlines() if 't_seconds_bucket{le="0.0025",m="a"}' in x]
    assert line.endswith('# {trace_id="second"} 0.0021' + line[line.rindex(" ") :])
    assert 'trace_id="first"' not in text


async def test_a_loop_hands_the_counts_over_within_the_flush_interval() -> None:
    registry, histogram, counter, _ = _pair()
    tallies = metrics_tally.tallies(registry)
    tallies.of(histogram.labels("a")).observe(0.01)
    tallies.of(counter.labels("a")).inc()
    # Not yet in the values other workers' scrapes read (the files, with several)...
    assert counter.labels("a")._value.get() == 0
    await asyncio.sleep(metrics_tally.FLUSH_SECONDS * 3)
    # ...but within the interval, with no scrape.
    assert counter.labels("a")._value.get() == 1
    assert histogram.labels("a")._sum.get() == 0.01


def test_off_a_loop_an_observation_is_handed_over_at_once() -> None:
    registry, _, counter, _ = _pair()
    metrics_tally.tallies(registry).of(counter.labels("a")).inc()
    assert counter.labels("a")._value.get() == 1


async def test_direct_tallies_hand_each_observation_over_at_once() -> None:
    registry = CollectorRegistry()
    tallies = metrics_tally.tallies(registry, direct=True)
    histogram, counter = _metrics(registry)
    tallies.of(histogram.labels("a")).observe(0.01, {"trace_id": "t"})
    tallies.of(counter.labels("a")).inc()
    # On a loop, yet at once: with workers, another worker's scrape reads the values.
    assert counter.labels("a")._value.get() == 1
    assert histogram.labels("a")._sum.get() == 0.01
