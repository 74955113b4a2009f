"""Server-Timing entries as text (gateway.timing_entries): the entry naming a gateway, and an
upstream's entries named after the gateway it says it is, or after its role."""

from __future__ import annotations

from gateway.timing_entries import identity_entry, prefixed, split


def test_entries_split_at_commas_outside_quotes() -> None:
    assert split(['a;dur=1, b;desc="x, y";dur=2', " ", "c"]) == [
        "a;dur=1", 'b;desc="x, y";dur=2', "c"
    ]  # fmt: skip


def test_a_gateway_upstream_is_named_by_itself_and_its_identity_entry_is_dropped() -> None:
    entries = split([f"{identity_entry('iris-proxy')}, predict;dur=3, hop.predictor;dur=2"])
    assert prefixed(entries, "predictor") == [
        "iris-proxy.predict;dur=3", "iris-proxy.hop.predictor;dur=2"
    ]  # fmt: skip
    # Its own upstream's entries keep the name it gave them: the path down the chain.
    assert prefixed(["mlserver.x;dur=1"], "predictor") == ["predictor.mlserver.x;dur=1"]


def test_any_other_upstream_is_named_by_its_role() -> None:
    assert prefixed(["predict;dur=3"], "predictor") == ["predictor.predict;dur=3"]


def test_a_name_that_is_no_token_is_made_one() -> None:
    entry = identity_entry('my "edge" gateway\\1')
    assert entry == 'gateway;desc="my \\"edge\\" gateway\\\\1"'
    assert prefixed([entry, "predict;dur=1"], "predictor") == ["my_edge_gateway_1.predict;dur=1"]
    assert prefixed(['gateway;desc=""', "predict;dur=1"], "explainer") == [
        "explainer.predict;dur=1"
    ]  # fmt: skip
    assert prefixed(["gateway;desc=plain", "p;dur=1"], "predictor") == ["plain.p;dur=1"]
