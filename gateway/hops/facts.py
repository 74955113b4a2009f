"""What an upstream said about itself, and the `Learner` that asks it, per upstream.

`UpstreamFacts` is a small frozen value: the protocols the upstream speaks, whether it takes
the binary tensor extension, its name and version, and the inputs its model declares. A
transport reads the current value on every request (an attribute read); the learning happens
off that path: when the upstream is first needed, and again after a call found it gone (a
failed connection), in a task of its own, bounded in time. A request that finds facts being
learned waits for them at most `LEARN_TIMEOUT`, and never past its own deadline; then it goes
on with what is known. One `Learner` per upstream: a pool of replicas holds one per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import request_context
from gateway.codecs.validate import TensorSpec

__all__ = [
    "LEARN_TIMEOUT",
    "UNKNOWN",
    "Learner",
    "UpstreamFacts",
    "declared_inputs",
    "takes_binary",
]

logger = logging.getLogger("gateway.hops")

# Seconds a learning may take (its calls included): a metadata call is quick or not coming,
# but a loaded machine (an upstream starting, say) can take seconds to open a gRPC channel.
LEARN_TIMEOUT = 5.0
# After a learning that got no answer, the next one waits this long: a burst of requests to
# an upstream that is down asks it once, not once each.
RELEARN_PAUSE = 0.25
# What the binary tensor extension is called in a server's metadata (Triton's and ours).
BINARY_EXTENSION = "binary_tensor_data"
# Servers, by the name their metadata gives, that take the extension without listing it.
SILENTLY_BINARY = frozenset({"kserve"})


@dataclass(frozen=True)
class UpstreamFacts:
    """What one upstream said about itself when last asked."""

    # The protocols it speaks ("v2", "v1", "grpc-v2"), preferred first; () when not known.
    protocols: tuple[str, ...] = ()
    # Whether it takes REST bodies with the binary tensor extension.
    binary: bool = False
    # Its name and version as its metadata gives them, for logs.
    server: str = ""
    # The inputs its model declares, by name; None when it declares none or was not asked.
    inputs: Mapping[str, TensorSpec] | None = field(default=None, compare=False)

    def describe(self) -> str:
        """One line for the log."""
        speaks = " and ".join(self.protocols) or "nothing known"
        server = f" ({self.server})" if self.server else ""
        binary = ", binary tensor data" if self.binary else ""
        inputs = f", inputs {', '.join(self.inputs)}" if self.inputs else ""
        return f"speaks {speaks}{server}{binary}{inputs}"


UNKNOWN = UpstreamFacts()

Probe = Callable[[float], Awaitable[UpstreamFacts]]


def takes_binary(server_metadata: Mapping[str, Any]) -> bool:
    """Whether a server's metadata (``GET /v2``, ServerMetadata) lists the binary extension."""
    extensions = server_metadata.get("extensions")
    if isinstance(extensions, list) and BINARY_EXTENSION in extensions:
        return True
    # KServe's server reads the extension (and refuses FP16 in JSON) without listing it.
    return server_metadata.get("name") in SILENTLY_BINARY


def server_name(server_metadata: Mapping[str, Any]) -> str:
    name, version = server_metadata.get("name"), server_metadata.get("version")
    return " ".join(str(part) for part in (name, version) if part)


def declared_inputs(model_metadata: Mapping[str, Any] | None) -> Mapping[str, TensorSpec] | None:
    """The inputs a model's metadata declares, by name; None when it declares none (or
    declares them in a form that cannot be checked against)."""
    entries = (model_metadata or {}).get("inputs")
    if not isinstance(entries, list) or not entries:
        return None
    specs: dict[str, TensorSpec] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if not (isinstance(name, str) and isinstance(datatype, str) and isinstance(shape, list)):
            return None
        if not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
            return None
        specs[name] = TensorSpec(name, datatype.upper(), tuple(shape))
    return specs


class Learner:
    """The facts of one upstream: learned by `probe` when first needed, and again after
    `forget` (a connection to it failed). `facts` is the value requests read. With
    `keep_inputs` false (``--validate_inputs false``) the declared inputs are not kept."""

    def __init__(self, probe: Probe, role: str, address: str, *, keep_inputs: bool = True) -> None:
        self.facts = UNKNOWN
        self._keep_inputs = keep_inputs
        self._probe = probe
        self._role = role
        self._address = address
        self._due = True
        self._task: asyncio.Task[None] | None = None
        self._last_try = -math.inf
        self._logged: UpstreamFacts | None = None

    @property
    def due(self) -> bool:
        """Whether the facts are to be learned (again) at the next use."""
        return self._due

    def forget(self) -> None:
        """Ask again at the next use: the upstream may have restarted as something else.
        What was learned stays in use until then. A learning under way is answer enough
        (its own calls fail as they ask: a REST ``GET /v2`` to a gRPC port, say)."""
        if self._task is None:
            self._due = True

    def update(self, facts: UpstreamFacts) -> None:
        """Take facts learned on the way (a model's metadata fetched for a client, say)."""
        self.facts = self._kept(facts)

    def declared(self, model_metadata: Mapping[str, Any]) -> None:
        """Take the inputs the upstream's model metadata declares (fetched for a client)."""
        facts = self.facts
        inputs = declared_inputs(model_metadata)
        self.update(UpstreamFacts(facts.protocols, facts.binary, facts.server, inputs))

    def soon(self) -> None:
        """Start learning in the background when due, without waiting for it (and not at
        all outside a running event loop)."""
        if self._due:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._start()

    async def learned(self) -> UpstreamFacts:
        """The facts, learned first when due: waits at most `LEARN_TIMEOUT`, and not past
        the current request's deadline; then answers with what is known."""
        if not self._due and self._task is None:
            return self.facts
        task = self._start()
        if task is not None:
            wait = LEARN_TIMEOUT
            context = request_context.current()
            remaining = None if context is None else context.remaining()
            if remaining is not None:
                wait = max(0.0, min(wait, remaining))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait)
        return self.facts

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start(self) -> asyncio.Task[None] | None:
        if self._task is None:
            now = time.monotonic()
            if now - self._last_try < RELEARN_PAUSE:
                return None
            self._last_try = now
            self._due = False
            # In a context of its own: not the request's deadline, span or timings.
            self._task = contextvars.Context().run(asyncio.ensure_future, self._learn())
        return self._task

    async def _learn(self) -> None:
        try:
            facts = await asyncio.wait_for(self._probe(LEARN_TIMEOUT), LEARN_TIMEOUT)
        except Exception as exc:
            # Asked again at the next use; meanwhile no binary body goes to an upstream that
            # has not said it takes one.
            self._due = True
            self.facts = UpstreamFacts(self.facts.protocols, False, self.facts.server)
            logger.info(
                "hop %s: %s did not say what it speaks (%s); asking again at the next request",
                self._role,
                self._address,
                _reason(exc),
            )
            self._logged = None
        else:
            facts = self.facts = self._kept(facts)
            logged = self._logged
            if logged is None or facts != logged or facts.inputs != logged.inputs:
                logger.info("hop %s: %s %s", self._role, self._address, facts.describe())
                self._logged = facts
        finally:
            self._task = None

    def _kept(self, facts: UpstreamFacts) -> UpstreamFacts:
        if self._keep_inputs or facts.inputs is None:
            return facts
        return UpstreamFacts(facts.protocols, facts.binary, facts.server)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {LEARN_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__
