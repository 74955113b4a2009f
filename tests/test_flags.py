"""KServe's flags and the gateway's (gateway.flags): described at import, parsed when asked."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from gateway.__main__ import _subparser, build_parser, main
from gateway.flag_types import HelpFormatter, at_least, strtobool
from gateway.flags import parser

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


def test_every_serve_flag_has_help_and_says_its_default_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve = _subparser(build_parser(), "serve")
    formatter = HelpFormatter("gateway serve")
    for action in serve._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        text = (formatter._get_help_string(action) or "") % {"default": action.default}
        assert text.count("default") <= 1, f"{action.option_strings[0]}: {text}"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "--listen_address" in help_text
    assert "(default: as --predictor_request_retries)" in " ".join(help_text.split())


def test_help_is_plain_text() -> None:
    for argv in (["--help"], ["serve", "--help"], ["demo", "--help"], ["trace", "--help"]):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main(argv)
        assert "`" not in out.getvalue(), argv  # no reStructuredText markup
        assert "\\" not in out.getvalue(), argv
