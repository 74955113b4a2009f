"""A stop that leaves no request unanswered, and ends on time.

From SIGTERM, requests already started (their body may still be arriving) have the grace
period to finish; new ones are refused (503 / UNAVAILABLE). When the grace period ends, every
request still running is cancelled and answered at once, 503 / UNAVAILABLE with a message
that says why, so that no client is left with a dropped connection. Both doors run their
requests inside `Drain.tracked`, which is how the stop finds them.

`BoundedExecutor` is the loop's thread pool: at the stop it waits for its threads only until
the stop's deadline (a sync model still running past it does not hold the process).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

import grpc
from aiohttp import web

__all__ = ["CLOSE_SECONDS", "BoundedExecutor", "Drain", "expired_message", "stop_serving"]

logger = logging.getLogger("gateway.model_server")


def expired_message(grace: float) -> str:
    """What a request cut off at the end of the grace period is answered."""
    return (
        f"the server is stopping and the request did not finish within its grace period "
        f"({grace:g} s); try again"
    )


class Drain:
    """The requests in flight in one server process, and their end at a stop."""

    __slots__ = ("_cut", "_idle", "_loop", "_thread", "expired", "grace", "stopping", "tasks")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None  # where the requests run
        self._thread = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        # True once the grace period has run out: a cancelled request answers, not vanishes.
        self.expired = False
        # True from the stop's start: answers close their connection.
        self.stopping = False
        self._cut: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None

    def tracked(self) -> _Tracked:
        """Count the current task (one request) as in flight for the block."""
        return _Tracked(self)

    def current_task(self) -> asyncio.Task[Any] | None:
        """`asyncio.current_task()`, without its getpid system call once the loop is known
        (it looks the running loop up with one)."""
        loop = self._loop
        if loop is None or self._thread != threading.get_ident() or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
        return asyncio.current_task(loop)

    def cut_off(self) -> bool:
        """Whether the current task (a request) was cancelled by the end of the grace period,
        and so must answer: if so, it is no longer counted as cancelled."""
        task = asyncio.current_task()
        if task is None or task not in self._cut:
            return False
        self._cut.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True

    async def wait(self, seconds: float) -> int:
        """Wait until no request is in flight, at most `seconds`; return how many still are."""
        deadline = time.monotonic() + seconds
        while self.tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), left)
            except asyncio.TimeoutError:
                break
        return len(self.tasks)

    def expire(self) -> int:
        """End the grace period: cancel every request still running (each answers at once);
        return how many."""
        self.expired = True
        running = [task for task in self.tasks if not task.done()]
        self._cut.update(running)
        for task in running:
            task.cancel()
        if running:
            logger.warning(
                "grace period (%g s) over: %d requests still running answered 503 / UNAVAILABLE",
                self.grace,
                len(running),
            )
        return len(running)

    def _done(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.tasks.discard(task)
            self._cut.discard(task)
        if not self.tasks and self._idle is not None:
            self._idle.set()


class _Tracked:
    """`Drain.tracked` (a class, not a generator: it runs per request)."""

    __slots__ = ("_drain", "_task")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> asyncio.Task[Any] | None:
        self._task = task = self._drain.current_task()
        if task is not None:
            self._drain.tasks.add(task)
        return task

    def __exit__(self, *exc: object) -> None:
        self._drain._done(self._task)


class BoundedExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool whose shutdown waits for running work only until `deadline`
    (time.monotonic(); None: as long as it takes), then drops what has not started."""

    deadline: float | None = None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)
        if not wait:
            return
        for thread in list(self._threads):
            left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            thread.join(left)

    def busy(self) -> int:
        """Threads still running work."""
        return sum(thread.is_alive() for thread in self._threads)


# After the grace period: time for the requests cut off to send their answers, and for
# aiohttp to close what is left (a client that does not read, say).
CLOSE_SECONDS = 0.25


async def stop_serving(
    drain: Drain, runner: web.AppRunner | None, grpc_server: grpc.aio.Server | None
) -> None:
    """Stop taking requests, give those in flight the grace period, answer the rest, close."""
    grace = drain.grace
    drain.stopping = True
    grpc_stopped = None
    if grpc_server is not None:
        # New calls are refused from now on; gRPC's own cancelling of the calls left (with a
        # message of its own) comes only after ours have been answered.
        grpc_stopped = asyncio.ensure_future(grpc_server.stop(grace + 2 * CLOSE_SECONDS))
    if runner is not None:
        for site in list(runner.sites):
            await site.stop()
        if runner.server is not None:
            _close_connections(runner.server)
    if await drain.wait(grace):
        drain.expire()
        await drain.wait(CLOSE_SECONDS)
    if runner is not None:
        await runner.cleanup()
    if grpc_stopped is not None:
        await grpc_stopped


def _close_connections(server: web.Server) -> None:
    """Close idle keep-alive connections now, and the others once their request is answered.

    aiohttp's own ``pre_shutdown`` leaves an idle connection open, and a request that then
    arrives on it is never read: its client waits until the drain ends. It has no public way
    to tell an idle connection, hence the private flag (read defensively: unknown is busy).
    """
    for connection in server.connections:
        if getattr(connection, "_request_in_progress", True):
            connection.close()
        else:
            connection.force_close()
