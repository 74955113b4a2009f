"""The one interface every hop implements; transports and wrappers alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

Headers = dict[str, str]


class Hop(ABC):
    """One way to reach an upstream: ``infer``, ``explain``, ``ready``, ``aclose``.

    `infer` takes what `preprocess` produced (an `InferRequest` for v2, a dict for v1) and
    returns what `postprocess` receives (an `InferResponse`, or a dict).
    """

    name: str = "hop"

    @abstractmethod
    async def infer(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def explain(self, payload: Any, headers: Headers) -> Any: ...

    @abstractmethod
    async def ready(self, model_name: str | None = None) -> bool: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Hop:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
