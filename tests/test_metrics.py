"""Prometheus metrics (gateway.metrics): requests and their stages. (Adding up across worker
processes changes process-wide state: `tests/test_model_server.py` runs real workers.)"""

from __future__ import annotations

from gateway.metrics import Metrics
from gateway.request_context import RequestContext


def test_a_request_and_its_stages_are_recorded() -> None:
    metrics = Metrics()
    context = RequestContext("r", "v2")
    context.record("predict", 0.5)
    context.record("hop.predictor", 0.25)  # a hop's own histogram records it, not a stage's
    metrics.observe("m", context, "200", 0.75)
    metrics.observe("m", context, "200", 0.25)
    sample = metrics.registry.get_sample_value
    labels = {"model_name": "m", "protocol": "v2", "code": "200"}
    assert sample("gateway_requests_total", labels) == 2
    assert sample("gateway_request_seconds_sum", {"model_name": "m", "protocol": "v2"}) == 1.0
    assert sample("request_predict_seconds_count", {"model_name": "m"}) == 2
    assert sample("request_preprocess_seconds_count", {"model_name": "m"}) is None
    body, content_type = metrics.exposition()
    assert b"gateway_requests_total" in body
    assert content_type.startswith("text/plain")
