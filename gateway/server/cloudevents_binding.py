"""The CloudEvents library at work: parse an event and write one, in binary or structured
mode. Imported on the first CloudEvent (`gateway.server.cloudevents`), so a gateway that never
sees one never loads the library."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.codecs import json_depth
from gateway.errors import InferenceError, InvalidInput

__all__ = ["read", "write"]

_JSON = "application/json"


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


def read(headers: Mapping[str, str], body: bytes, binary: bool) -> tuple[Any, dict[str, Any]]:
    """The event's data and attributes; InvalidInput when it is no valid event."""
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
    return event.get_data(), dict(event.get_attributes())


def write(attributes: dict[str, Any], data: Any, binary: bool) -> tuple[dict[str, str], bytes]:
    """An event of `attributes` and `data`, as (headers, body) in binary or structured mode."""
    try:
        event = CloudEvent(attributes, data)
    except BaseCloudEventException as exc:  # a merged attribute the spec does not allow
        raise InferenceError(f"cannot build the response CloudEvent: {exc}") from None
    try:
        if binary:
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
