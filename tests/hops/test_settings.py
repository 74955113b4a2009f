"""A hop's settings (hops.settings): buildable from anything, checked when built."""

from __future__ import annotations

import pytest

from gateway.hops.settings import PROTOCOLS, HopSettings, RetryPolicy


def test_defaults_need_only_a_role_and_a_host() -> None:
    settings = HopSettings(role="step", host="h:1")
    assert (settings.model_name, settings.protocol, settings.timeout) == ("", "v1", 600)
    assert settings.retry == RetryPolicy()
    assert settings.retry.retries == 0
    assert PROTOCOLS == ("v1", "v2", "grpc-v2", "auto")


@pytest.mark.parametrize(
    ("options", "message"),
    [({"protocol": "v3"}, "step protocol must be one of"), ({"rest_format": "xml"}, "rest format")],
)
def test_unknown_protocols_and_formats_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HopSettings(role="step", host="h:1", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "use_ssl", "base_url", "target"),
    [
        ("h:1", False, "http://h:1", "h:1"),
        ("h", False, "http://h", "h:80"),
        ("h", True, "https://h", "h:443"),
        ("https://h:8443/", False, "https://h:8443", "h:8443"),
        ("[::1]:9", False, "http://[::1]:9", "[::1]:9"),
        ("[::1]", True, "https://[::1]", "[::1]:443"),
    ],
)
def test_where_the_upstream_is(host: str, use_ssl: bool, base_url: str, target: str) -> None:
    settings = HopSettings(role="predictor", host=host, use_ssl=use_ssl)
    assert (settings.base_url, settings.target) == (base_url, target)
