"""The `Hop` interface (hops.base): what a hop and a wrapper get for free."""

from __future__ import annotations

from typing import Any

from gateway.hops.base import Headers, Hop, HopWrapper


class Recorder(Hop):
    """A hop that records which method each call came to."""

    name = "recorder"
    protocol = "grpc-v2"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.closed = False

    async def infer(self, payload: Any, headers: Headers) -> Any:
        self.seen.append(("infer", payload))
        return "inferred"

    async def explain(self, payload: Any, headers: Headers) -> Any:
        self.seen.append(("explain", payload))
        return "explained"

    async def ready(self, model_name: str | None = None) -> bool:
        return model_name == "m"

    async def aclose(self) -> None:
        self.closed = True


async def test_an_attempt_is_the_call_itself_unless_a_hop_tells_attempts_apart() -> None:
    hop = Recorder()
    assert await hop.attempt("infer", 1, {}, 2) == "inferred"
    assert await hop.attempt("explain", 2, {}, 1) == "explained"
    assert hop.seen == [("infer", 1), ("explain", 2)]
    assert hop.accepts_passthrough("grpc-v2", False) is False


class Upper(HopWrapper):
    """A wrapper that changes only `infer`."""

    async def infer(self, payload: Any, headers: Headers) -> Any:
        return await self.inner.infer(str(payload).upper(), headers)


async def test_a_wrapper_delegates_what_it_does_not_change() -> None:
    inner = Recorder()
    async with Upper(inner) as hop:
        assert (hop.name, hop.protocol) == ("recorder", "grpc-v2")
        assert await hop.infer("a", {}) == "inferred"
        assert await hop.explain("b", {}) == "explained"
        assert await hop.ready("m") is True
        # An attempt goes through the wrapper's own infer, not around it.
        assert await hop.attempt("infer", "c", {}, 2) == "inferred"
    assert inner.seen == [("infer", "A"), ("explain", "b"), ("infer", "C")]
    assert inner.closed, "leaving the block closes the inner hop"
