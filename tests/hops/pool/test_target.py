"""Pool targets: what an operator may write, and a one-line error naming what is wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.hops.pool import Endpoint, HostPort, PoolTarget, PoolTargetError, parse_target


@pytest.mark.parametrize(
    ("text", "entries", "scheme"),
    [
        ("predictor:8080", [("predictor", 8080)], None),
        ("predictor", [("predictor", 80)], None),
        (" a:1 , b:2,10.0.0.3:3 ", [("a", 1), ("b", 2), ("10.0.0.3", 3)], None),
        ("[::1]:8081,[fe80::1]", [("::1", 8081), ("fe80::1", 80)], None),
        ("http://a:1/,http://b:2", [("a", 1), ("b", 2)], "http"),
        ("HTTPS://svc.ns.svc.cluster.local.:443", [("svc.ns.svc.cluster.local.", 443)], "https"),
        ("my_svc-1.local:65535", [("my_svc-1.local", 65535)], None),
    ],
)
def test_parses_lists_names_and_ip_literals(
    text: str, entries: list[tuple[str, int]], scheme: str | None
) -> None:
    target = parse_target(text, default_port=80)
    assert [(entry.host, entry.port) for entry in target.entries] == entries
    assert target.scheme == scheme


@pytest.mark.parametrize(
    ("text", "entry", "reason"),
    [
        ("a:1,,b:2", "a:1,,b:2", "empty"),
        ("a:1,", "a:1,", "empty"),
        ("   ", "   ", "no host"),
        ("a:1,b:99999", "b:99999", "1 to 65535"),
        ("a:0", "a:0", "1 to 65535"),
        ("a:http", "a:http", "1 to 65535"),
        ("a:1,ftp://b:2", "ftp://b:2", "scheme"),
        ("http://a:1,https://b:2", "https://b:2", "same scheme"),
        ("http://a:1,b:2", "b:2", "same scheme"),
        ("a:1/v2/models", "a:1/v2/models", "path"),
        ("::1:8080", "::1:8080", "brackets"),
        ("[::1:8080", "[::1:8080", "']'"),
        ("[10.0.0.1]:80", "[10.0.0.1]:80", "not an IPv6"),
        ("[::1]x", "[::1]x", "':port'"),
        ("bad host:1", "bad host:1", "not a host name"),
        ("-a:1", "-a:1", "not a host name"),
        (":8080", ":8080", "not a host name"),
        ("8080", "8080", "not a host name"),
        ("a:1,a:1", "a:1", "twice"),
    ],
)
def test_a_bad_entry_is_named_in_one_line(text: str, entry: str, reason: str) -> None:
    with pytest.raises(PoolTargetError) as caught:
        parse_target(text, default_port=80)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(entry) in message
    assert reason in message
    assert isinstance(caught.value, ValueError)


def test_an_endpoint_names_where_it_connects_and_what_it_was_called() -> None:
    named = Endpoint("predictor.ns", "10.1.2.3", 8080)
    assert named.hostport == "10.1.2.3:8080"
    assert named.authority == "predictor.ns:8080"
    assert str(named) == "predictor.ns:8080 (10.1.2.3:8080)"
    literal = Endpoint("::1", "::1", 9000)
    assert literal.hostport == literal.authority == str(literal) == "[::1]:9000"
    assert HostPort("10.0.0.1", 1).is_ip
    assert not HostPort("a", 1).is_ip


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_names = st.lists(_label, min_size=1, max_size=4).map(".".join).filter(lambda n: not n.isdigit())
_hosts = st.one_of(_names, st.ip_addresses().map(str))
_entries = st.builds(HostPort, _hosts, st.integers(1, 65535))


@given(st.lists(_entries, min_size=1, max_size=6, unique=True), st.sampled_from([None, "http"]))
def test_a_target_written_out_parses_back_to_itself(
    entries: list[HostPort], scheme: str | None
) -> None:
    target = PoolTarget(tuple(entries), scheme)
    assert parse_target(str(target), default_port=1) == target
