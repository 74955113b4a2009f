"""KServe's `PredictorConfig` (gateway.predictor_config)."""

from __future__ import annotations

import pytest

from gateway.predictor_config import PredictorConfig


def test_kserves_names_old_and_new() -> None:
    config = PredictorConfig("h:1", "grpc-v2", True, 7, 2, True)
    assert (config.protocol, config.timeout, config.retries, config.use_ssl) == (
        "grpc-v2",
        7,
        2,
        True,
    )
    assert config.predictor_base_url == "https://h:1"
    assert PredictorConfig("h:1").predictor_base_url == "http://h:1"
    assert PredictorConfig("h:1").predictor_health_check is False


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="predictor_protocol must be one of v1, v2, grpc-v2"):
        PredictorConfig("h:1", "v3")
