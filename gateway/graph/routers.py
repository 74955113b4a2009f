"""The four router types, as KServe's router (``cmd/router/main.go``) runs them.

Each takes the node, its input, and `call` (which runs one step: a hop or a nested node, and
raises a `GatewayError` when the step fails). What is KServe's, and what is ours:

- Sequence: steps in order; each gets the node's input, or with ``data: $response`` the
  previous step's answer. A step's condition is tested on the previous step's answer; when it
  does not hold the node stops there and answers that answer (KServe >= 0.15: with its status).
  A failed Hard step is the node's answer at once; a failed Soft step is not, unless it is the
  last step run (ours: or the next step wants its answer as ``$response``, since a model
  cannot be sent an error).
- Switch: the first step whose condition holds on the node's input; none: 404.
- Splitter: one step drawn by weight.
- Ensemble: every step at once; one answer keyed by step name (else index). A failed Soft
  step's error body takes its place; the first Hard step to fail is the node's answer (ours:
  the first to fail in time, and its siblings are cancelled, rather than the first in order).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace

from gateway.errors import GatewayError, ModelNotFound
from gateway.graph import payloads
from gateway.graph.spec import RESPONSE, Node, RouterType, Step

__all__ = ["ROUTERS", "Call", "NoRouteMatched"]

Call = Callable[[Step, Any], Awaitable[Any]]
Router = Callable[[Node, Any, Call, random.Random], Awaitable[Any]]


class NoRouteMatched(ModelNotFound):
    """No condition of a Switch node held: 404, in KServe's router's words."""

    def __init__(self, node: str) -> None:
        GatewayError.__init__(self, "None of the routes matched with the switch condition")
        self.model_name = self.node = node


async def sequence(node: Node, request: Any, call: Call, rng: random.Random) -> Any:
    last: Any = None  # the previous step's answer, or what it failed with
    for index, step in enumerate(node.steps):
        if step.condition is not None and not step.condition.matches(payloads.document(last)):
            trace.get_current_span().add_event("early stop", {"gateway.graph.step": step.key})
            break
        payload = request
        if step.data == RESPONSE and index > 0:
            if isinstance(last, GatewayError):
                raise last
            payload = payloads.as_request(last, request)
        try:
            last = await call(step, payload)
        except GatewayError as exc:
            if step.hard:
                raise
            last = exc
    if isinstance(last, GatewayError):
        raise last
    return last


async def switch(node: Node, request: Any, call: Call, rng: random.Random) -> Any:
    document = payloads.document(request)
    for step in node.steps:
        assert step.condition is not None  # refused at load
        if step.condition.matches(document):
            return await call(step, request)
    raise NoRouteMatched(node.name)


async def splitter(node: Node, request: Any, call: Call, rng: random.Random) -> Any:
    point = rng.randrange(100)
    end = 0
    for step in node.steps:
        end += step.weight or 0
        if point < end:
            return await call(step, request)
    raise AssertionError("Splitter weights add up to 100 (checked at load)")


async def ensemble(node: Node, request: Any, call: Call, rng: random.Random) -> Any:
    async def run(step: Step) -> Any:
        try:
            return await call(step, request)
        except GatewayError as exc:
            if step.hard:
                raise
            return exc  # a Soft step's failure is part of the answer

    tasks = [asyncio.ensure_future(run(step)) for step in node.steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [task for task in tasks if task in done and task.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        # Cancelled siblings finish (and close their spans) before the node answers.
        await asyncio.gather(*tasks, return_exceptions=True)
    return payloads.merge(
        request, [(s.key, t.result()) for s, t in zip(node.steps, tasks, strict=True)]
    )


ROUTERS: dict[RouterType, Router] = {
    RouterType.SEQUENCE: sequence,
    RouterType.SWITCH: switch,
    RouterType.SPLITTER: splitter,
    RouterType.ENSEMBLE: ensemble,
}
