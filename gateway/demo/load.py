"""The demo's client: a stream of requests to transformer A over every protocol it speaks
(REST v2 JSON, REST v2 binary, gRPC v2, and v1 ``:explain``), and to the inference graph G
(one classifier, or asked for the ensemble of two), a few at a time, with a progress bar on
stderr. Each answer is checked, so "0 errors" means right answers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import grpc
import numpy as np
import orjson

from gateway._proto import SERVICE_NAME
from gateway.codecs.rest import BINARY_CONTENT_TYPE, INFERENCE_HEADER
from gateway.demo.models import CLASSES, RAW_INPUT
from gateway.demo.topology import DemoError
from gateway.infer_request import InferRequest
from gateway.infer_response import InferResponse
from gateway.infer_type import InferInput

__all__ = ["KINDS", "Client", "LoadResult", "Progress", "run_load"]

KINDS = ("rest-json", "rest-binary", "grpc", "explain", "graph", "graph-ensemble")
# One explanation per this many predictions: explainers are the slow, occasional path.
EXPLAIN_EVERY = 20
# One request to the graph per this many predictions, by turns to each of its branches.
GRAPH_EVERY = 3
# Flowers (cm) the requests are drawn from, one per class, jittered per request.
_FLOWERS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]], dtype=np.float32
)


@dataclass
class LoadResult:
    """What the client saw: latencies per request kind, errors, and the measured window."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    first_error: str | None = None
    # Wall-clock (Unix ns) start of the measured requests: earlier traces are warm-up.
    started_ns: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(map(len, self.latencies.values())) + self.error_count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class Client:
    """One connection pool per protocol to transformer A, as a real client would keep."""

    def __init__(
        self, rest_url: str, grpc_target: str, model: str, batch: int, graph_url: str = ""
    ) -> None:
        self.model = model
        self.batch = batch
        self._rest = rest_url
        self._graph = graph_url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._channel = grpc.aio.insecure_channel(grpc_target)
        # Bytes in, bytes out: the gateway's own codecs build and read the messages.
        self._infer = self._channel.unary_unary(
            f"/{SERVICE_NAME}/ModelInfer", request_serializer=None, response_deserializer=None
        )
        self._rng = np.random.default_rng(7)

    async def aclose(self) -> None:
        await self._session.close()
        await self._channel.close(grace=None)

    def call(self, kind: str) -> Callable[[], Awaitable[None]]:
        return {
            "rest-json": self.rest_json,
            "rest-binary": self.rest_binary,
            "grpc": self.grpc,
            "explain": self.explain,
            "graph": self.graph,
            "graph-ensemble": self.graph_ensemble,
        }[kind]

    async def rest_json(self) -> None:
        body, _ = self._request(binary=False).to_rest()
        answer, length = await self._post(self._infer_url(self._rest), orjson.dumps(body))
        _check(InferResponse.from_bytes(answer, length), self.batch)

    async def rest_binary(self) -> None:
        request = self._request(binary=True)
        request.parameters = {"binary_data_output": True}
        body, length = request.to_rest()
        assert isinstance(body, bytes)
        headers = {INFERENCE_HEADER: str(length), "Content-Type": BINARY_CONTENT_TYPE}
        answer, answer_length = await self._post(self._infer_url(self._rest), body, headers)
        _check(InferResponse.from_bytes(answer, answer_length), self.batch)

    async def grpc(self) -> None:
        answer = await self._infer(self._request(binary=True).to_grpc_bytes(), timeout=30)
        _check(InferResponse.from_grpc_bytes(answer), self.batch)

    async def graph(self) -> None:
        """To the graph, which answers with its one classifier."""
        await self._to_graph(ensemble=False)

    async def graph_ensemble(self) -> None:
        """To the graph, asked (a request parameter its Switch reads) for both classifiers."""
        await self._to_graph(ensemble=True)

    async def _to_graph(self, ensemble: bool) -> None:
        request = self._request(binary=False)
        request.parameters = {"ensemble": ensemble}
        body, _ = request.to_rest()
        answer, length = await self._post(self._infer_url(self._graph), orjson.dumps(body))
        _check(InferResponse.from_bytes(answer, length), self.batch)

    async def explain(self) -> None:
        body = orjson.dumps({"instances": self._rows().tolist()})
        answer, _ = await self._post(f"{self._rest}/v1/models/{self.model}:explain", body)
        explanations = orjson.loads(answer).get("explanations")
        if not isinstance(explanations, list) or len(explanations) != self.batch:
            raise AssertionError(f"unexpected explanation: {answer[:200]!r}")

    def _rows(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        picks = self._rng.integers(0, len(_FLOWERS), self.batch)
        noise = self._rng.normal(0, 0.1, (self.batch, 4)).astype(np.float32)
        return np.asarray(_FLOWERS[picks] + noise, dtype=np.float32)

    def _request(self, binary: bool) -> InferRequest:
        tensor = InferInput(RAW_INPUT, [self.batch, 4], "FP32")
        tensor.set_data_from_numpy(self._rows(), binary_data=binary)
        return InferRequest(self.model, [tensor])

    def _infer_url(self, base: str) -> str:
        return f"{base}/v2/models/{self.model}/infer"

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[bytes, int | None]:
        headers = headers or {"Content-Type": "application/json"}
        async with self._session.post(url, data=body, headers=headers) as answer:
            content = await answer.read()
            if answer.status != 200:
                raise AssertionError(f"HTTP {answer.status}: {content[:200]!r}")
            length = answer.headers.get(INFERENCE_HEADER)
            return content, int(length) if length is not None else None


def _check(response: InferResponse, batch: int) -> None:
    label = response.get_output_by_name("label")
    if label is None or len(label.as_string()) != batch:
        raise AssertionError(f"unexpected answer: {response!r}")
    if not set(label.as_string()) <= set(CLASSES):
        raise AssertionError(f"unknown labels: {label.as_string()}")


def schedule(predictions: int) -> list[str]:
    """The request kinds in order: predictions round-robin over the protocols, with an
    explanation every `EXPLAIN_EVERY` predictions and a request to the graph every
    `GRAPH_EVERY` (at least one of each)."""
    kinds: list[str] = []
    graph_kinds = ("graph", "graph-ensemble")
    for index in range(predictions):
        kinds.append(KINDS[index % 3])
        if index % EXPLAIN_EVERY == EXPLAIN_EVERY // 2:
            kinds.append("explain")
        if index % GRAPH_EVERY == GRAPH_EVERY - 1:
            kinds.append(graph_kinds[index // GRAPH_EVERY % 2])
    for kind in ("explain", *graph_kinds):
        if kind not in kinds:
            kinds.append(kind)
    return kinds


class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a line per tenth else."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr, width: int = 30) -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self._tty = stream.isatty()
        self._shown = -1

    def update(self, done: int, errors: int) -> None:
        step = done * 10 // max(self.total, 1)
        if not self._tty and step == self._shown and done != self.total:
            return
        self._shown = step
        filled = self.width * done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"requests [{bar}] {done}/{self.total}, {errors} errors"
        end = "" if self._tty and done < self.total else "\n"
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()


async def run_load(client: Client, kinds: list[str], concurrency: int) -> LoadResult:
    """Send one request of each kind (warm-up, not measured), then `kinds`, `concurrency`
    at a time."""
    result = LoadResult()
    for kind in KINDS:
        try:
            await client.call(kind)()
        except Exception as exc:
            raise DemoError(f"the first {kind} request failed: {exc}") from exc
    progress = Progress(len(kinds))
    queue = iter(kinds)
    done = 0

    async def worker() -> None:
        nonlocal done
        for kind in queue:  # one shared iterator: each worker takes the next request
            started = time.perf_counter()
            try:
                await client.call(kind)()
            except Exception as exc:
                result.errors[kind] += 1
                result.first_error = result.first_error or f"{kind}: {exc}"
            else:
                result.latencies[kind].append(time.perf_counter() - started)
            done += 1
            progress.update(done, result.error_count)

    result.started_ns = time.time_ns()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
