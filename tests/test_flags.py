"""KServe's flags and the gateway's (gateway.flags): described at import, parsed when asked."""

from __future__ import annotations

import argparse

import pytest

from gateway.flags import at_least, parser, strtobool

WORDS = [("true", True), ("Yes", True), ("1", True), ("off", False), (" F ", False), ("0", False)]


@pytest.mark.parametrize(("text", "value"), WORDS)
def test_kserves_boolean_words(text: str, value: bool) -> None:
    assert strtobool(text) is value


def test_what_is_not_a_boolean_or_too_small_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a boolean"):
        strtobool("maybe")
    with pytest.raises(argparse.ArgumentTypeError, match="must be 0 or more, not -1"):
        at_least(0)("-1")
    assert at_least(1)("3") == 3


def test_defaults_and_kserves_flags() -> None:
    args = parser.parse_args([])
    assert (args.http_port, args.grpc_port, args.predictor_protocol) == (8080, 8081, "auto")
    assert args.predictor_host is None
    assert args.explainer_request_retries is None  # the predictor's, when not given
    kserve = parser.parse_args(
        ["--model_name", "m", "--predictor_host", "p:80", "--protocol", "v2",
         "--enable_predictor_health_check", "--explainer_host", "e:80"]
    )  # fmt: skip
    assert (kserve.model_name, kserve.predictor_host, kserve.protocol) == ("m", "p:80", "v2")
    assert kserve.enable_predictor_health_check is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--explainer_request_retries", "-1"])
