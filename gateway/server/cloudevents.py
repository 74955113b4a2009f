"""CloudEvents on v1 REST: an event in (binary or structured mode) gives an event out in the
same mode, as KServe does. The model sees only the event's data.

Binary mode carries the attributes in ``ce-*`` headers and the data as the body; structured
mode carries the whole event as ``application/cloudevents+json``. The library itself
(`gateway.server.cloudevents_binding`) is imported on the first event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.infer_response import InferResponse

__all__ = ["STRUCTURED", "EventSettings", "Incoming", "decode", "encode"]

STRUCTURED = "application/cloudevents+json"
_JSON = "application/json"
_BINARY = "application/octet-stream"
# Attributes a response event never takes from the request's: it is a new event.
_OWN = frozenset({"id", "time", "specversion"})


@dataclass(frozen=True)
class EventSettings:
    """How response events are labelled; KServe's ``CE_*`` environment variables."""

    type: str = "io.kserve.inference.response"
    # None: ``io.kserve.inference.<model name>``.
    source: str | None = None
    # Copy the request event's attributes (extensions included) into the response event.
    merge: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EventSettings:
        return cls(
            type=environ.get("CE_TYPE", cls.type),
            source=environ.get("CE_SOURCE"),
            merge=environ.get("CE_MERGE", "false").lower() == "true",
        )


@dataclass(frozen=True)
class Incoming:
    """How the request's event came: its mode and its attributes."""

    binary: bool
    attributes: dict[str, Any]


def decode(headers: Mapping[str, str], body: bytes) -> tuple[Any, Incoming] | None:
    """The event's data and how it came; None when the request is no CloudEvent.
    `headers` have lower-case keys."""
    if "ce-specversion" in headers:
        binary = True
    elif _media_type(headers.get("content-type")) == STRUCTURED:
        binary = False
    else:
        return None
    from gateway.server import cloudevents_binding

    data, attributes = cloudevents_binding.read(headers, body, binary)
    return data, Incoming(binary, attributes)


def encode(
    result: Any, incoming: Incoming, model_name: str, settings: EventSettings
) -> tuple[dict[str, str], bytes]:
    """The response event for `result`, in the request's mode: (headers, body)."""
    from gateway.server import cloudevents_binding

    if isinstance(result, InferResponse):
        result = result.to_rest()[0]
    attributes: dict[str, Any] = {}
    if settings.merge:
        attributes = {k: v for k, v in incoming.attributes.items() if k not in _OWN}
    attributes["type"] = settings.type
    attributes["source"] = settings.source or f"io.kserve.inference.{model_name}"
    is_bytes = isinstance(result, bytes | bytearray)
    attributes["datacontenttype"] = _BINARY if is_bytes else _JSON
    return cloudevents_binding.write(attributes, result, incoming.binary)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
