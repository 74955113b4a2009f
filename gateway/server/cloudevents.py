"""CloudEvents on v1 REST: an event in (binary or structured mode) gives an event out in the
same mode, as KServe does. The model sees only the event's data.

Binary mode carries the attributes in ``ce-*`` headers and the data as the body; structured
mode carries the whole event as ``application/cloudevents+json``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.codecs import json_depth
from gateway.errors import InferenceError, InvalidInput
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


class _Format(JSONFormat):
    """The library's JSON format, with orjson for data and a 400 for data that is not JSON
    although its content type says so (the library would quietly pass it on as text)."""

    def read_data(
        self, body: bytes, datacontenttype: str | None
    ) -> dict[str, Any] | str | bytes | None:
        if not body:
            return None
        if not self.JSON_CONTENT_TYPE_PATTERN.match(datacontenttype or _JSON):
            return body
        try:
            data: dict[str, Any] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"CloudEvent data is not valid JSON: {exc}") from None
        json_depth.check(body, "CloudEvent data")
        return data

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        return _dumps(data)

    def write(self, event: BaseCloudEvent) -> bytes:
        document = dict(event.get_attributes())
        data = event.get_data()
        if isinstance(data, bytes | bytearray):
            document["data_base64"] = base64.b64encode(data).decode("ascii")
        elif data is not None:
            document["data"] = data
        return _dumps(document)


_FORMAT = _Format()


def decode(headers: Mapping[str, str], body: bytes) -> tuple[Any, Incoming] | None:
    """The event's data and how it came; None when the request is no CloudEvent.
    `headers` have lower-case keys."""
    if "ce-specversion" in headers:
        binary = True
    elif _media_type(headers.get("content-type")) == STRUCTURED:
        binary = False
    else:
        return None
    if not binary:  # the library parses it with the json module, which reads any depth
        json_depth.check(body, "CloudEvent")
    message = ce_http.HTTPMessage(headers=dict(headers), body=body)
    try:
        if binary:
            event = ce_http.from_binary(message, _FORMAT)
        else:
            event = ce_http.from_structured(message, _FORMAT)
    except InvalidInput:
        raise
    # The library's structured reader raises AttributeError for JSON that is not an object,
    # and (it parses with the json module) RecursionError for JSON nested too deep.
    except (BaseCloudEventException, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidInput(f"invalid CloudEvent: {exc}") from None
    return event.get_data(), Incoming(binary, dict(event.get_attributes()))


def encode(
    result: Any, incoming: Incoming, model_name: str, settings: EventSettings
) -> tuple[dict[str, str], bytes]:
    """The response event for `result`, in the request's mode: (headers, body)."""
    if isinstance(result, InferResponse):
        result = result.to_rest()[0]
    attributes: dict[str, Any] = {}
    if settings.merge:
        attributes = {k: v for k, v in incoming.attributes.items() if k not in _OWN}
    attributes["type"] = settings.type
    attributes["source"] = settings.source or f"io.kserve.inference.{model_name}"
    is_bytes = isinstance(result, bytes | bytearray)
    attributes["datacontenttype"] = _BINARY if is_bytes else _JSON
    try:
        event = CloudEvent(attributes, result)
    except BaseCloudEventException as exc:  # a merged attribute the spec does not allow
        raise InferenceError(f"cannot build the response CloudEvent: {exc}") from None
    try:
        if incoming.binary:
            message = ce_http.to_binary(event, _FORMAT)
        else:
            message = ce_http.to_structured(event, _FORMAT)
    except orjson.JSONEncodeError as exc:
        raise InferenceError(f"the response cannot be encoded as JSON: {exc}") from None
    return message.headers, message.body


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(
        obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
    )


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
