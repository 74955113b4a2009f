"""The v2 REST body: JSON, optionally followed by binary tensor data (the binary extension).

A binary body is ``JSON header || tensor bytes...``; the ``Inference-Header-Content-Length``
HTTP header gives the JSON's length, and each binary tensor's ``binary_data_size`` parameter
its share of the rest, in order. Decoding slices the body (no copy); encoding joins once.
Plain values in and out: the data model (`gateway.messages`) builds tensors from them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from gateway import offload
from gateway.codecs import json_depth
from gateway.codecs.tensor_fields import TensorFields
from gateway.errors import InvalidInput

INFERENCE_HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Parameters that describe REST framing only; they never travel to gRPC.
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
REST_ONLY = frozenset({BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT})

Buffer = bytes | bytearray | memoryview


def json_length(header_value: str | None, body_length: int) -> int | None:
    """The JSON length from ``Inference-Header-Content-Length`` (None when absent)."""
    if header_value is None:
        return None
    try:
        length = int(header_value)
    except ValueError:
        raise InvalidInput(f"{INFERENCE_HEADER} must be an integer, got {header_value!r}") from None
    if not 0 <= length <= body_length:
        raise InvalidInput(f"{INFERENCE_HEADER} is {length}, but the body has {body_length} bytes")
    return length


def decode_weight(body: Buffer, length: int | None) -> int:
    """How much work decoding `body` is (`gateway.offload.weight`): its JSON, and its binary
    part when a BYTES tensor may be there (numeric data is read without a copy)."""
    size = len(body)
    if length is None or not 0 <= length <= size:
        return offload.weight(size)
    if length >= offload.HEAVY:
        return offload.weight(length)
    mentions_bytes = b"bytes" in bytes(memoryview(body)[:length]).lower()
    return offload.weight(length, size - length if mentions_bytes else 0)


def split_body(body: Buffer, length: int | None) -> tuple[dict[str, Any], memoryview]:
    """Parse the JSON part of a body; return it with a view of the binary part."""
    view = memoryview(body).cast("B")
    if length is None:
        length = len(view)
    elif not 0 <= length <= len(view):
        raise InvalidInput(f"{INFERENCE_HEADER} is {length}, but the body has {len(view)} bytes")
    try:
        header = orjson.loads(view[:length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    json_depth.check(body if length == len(view) else view[:length])
    if not isinstance(header, dict):
        raise InvalidInput("body must be a JSON object")
    return header, view[length:]


def check_binary_sizes(body: Buffer, length: int, key: str = "outputs") -> None:
    """Check that the binary tensors listed under `key` fill a binary body's tail exactly,
    reading only its JSON part: what a body passed through unread gets checked for."""
    header, tail = split_body(body, length)
    entries = header.get(key)
    declared = 0
    for entry in entries if isinstance(entries, list) else ():
        params = entry.get("parameters") if isinstance(entry, dict) else None
        size = params.get(BINARY_DATA_SIZE) if isinstance(params, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            declared += size
    if declared != len(tail):
        raise InvalidInput(
            f"its tensors have {declared} bytes of binary data, but {len(tail)} bytes follow "
            "the JSON"
        )


def read_entries(header: dict[str, Any], key: str, tail: memoryview) -> Iterator[TensorFields]:
    """The tensors listed under `key`, binary ones taking their bytes from `tail` in order.

    A generator: the caller builds each tensor before the next is read, so the first fault
    in the body is the one reported."""
    entries = header.get(key)
    if not isinstance(entries, list):
        raise InvalidInput(f"{key!r} must be a list of tensors")
    offset = 0
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInput(f"{key}[{index}] must be a JSON object")
        name = entry.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"{key}[{index}] needs a string 'name'")
        params = read_parameters(entry, f"tensor {name!r}")
        size = params.pop(BINARY_DATA_SIZE, None) if params else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"tensor {name!r}: binary_data_size must be a count of bytes")
            if offset + size > len(tail):
                raise InvalidInput(
                    f"tensor {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(tail) - offset} bytes left)"
                )
            raw = tail[offset : offset + size]
            offset += size
            yield TensorFields(
                name, entry.get("shape"), entry.get("datatype"), params or None, raw, None
            )
        elif "data" in entry:
            yield TensorFields(
                name, entry.get("shape"), entry.get("datatype"), params, None, entry["data"]
            )
        else:
            raise InvalidInput(f"tensor {name!r} has neither 'data' nor 'binary_data_size'")
    if offset != len(tail):
        raise InvalidInput(f"{len(tail) - offset} bytes after the binary tensors belong to none")


def read_requested_outputs(
    header: dict[str, Any],
) -> list[tuple[str, dict[str, Any] | None]] | None:
    """The outputs a request asks for: (name, parameters) each; None when it names none."""
    entries = header.get("outputs")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a string 'name'")
        outputs.append((entry["name"], read_parameters(entry, entry["name"])))
    return outputs


def read_parameters(obj: dict[str, Any], where: str) -> dict[str, Any] | None:
    params = obj.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be a JSON object")
    return dict(params)


def read_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key!r} must be a string")
    return value


def tensor_entry(
    name: str,
    datatype: str,
    shape: list[int],
    parameters: dict[str, Any] | None,
    *,
    data: Any = None,
    binary_size: int | None = None,
) -> dict[str, Any]:
    """One tensor's JSON object: with its `data`, or (`binary_size` given) pointing at that
    many bytes of the binary tail."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    params = {k: v for k, v in (parameters or {}).items() if k != BINARY_DATA_SIZE}
    if binary_size is not None:
        params[BINARY_DATA_SIZE] = binary_size
    else:
        entry["data"] = data
    if params:
        entry["parameters"] = params
    return entry


def join_body(header: dict[str, Any], raws: Sequence[Buffer]) -> tuple[bytes, int | None]:
    """Serialize a body; the JSON length is None when nothing binary follows."""
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raws:
        return head, None
    return b"".join([head, *raws]), len(head)


def request_header(
    inputs: list[dict[str, Any]],
    request_id: str | None,
    parameters: dict[str, Any] | None,
    requested: Sequence[tuple[str, dict[str, Any] | None]] | None,
    binary: bool | None,
) -> dict[str, Any]:
    """A request's JSON. `binary` forces the answer's outputs in or out of binary (the
    ``binary_data_output`` / ``binary_data`` parameters); None leaves the parameters as they
    are."""
    header: dict[str, Any] = {"inputs": inputs}
    if request_id:
        header["id"] = request_id
    params = dict(parameters or {})
    if binary is not None:
        params.pop(BINARY_DATA_OUTPUT, None)
        if binary:
            params[BINARY_DATA_OUTPUT] = True
    if params:
        header["parameters"] = params
    if requested:
        header["outputs"] = [_requested(name, params, binary) for name, params in requested]
    return header


def response_header(
    outputs: list[dict[str, Any]],
    model_name: str,
    model_version: str | None,
    response_id: str | None,
    parameters: dict[str, Any] | None,
) -> dict[str, Any]:
    """A response's JSON."""
    header: dict[str, Any] = {"model_name": model_name}
    if model_version:
        header["model_version"] = model_version
    if response_id:
        header["id"] = response_id
    if parameters:
        header["parameters"] = parameters
    header["outputs"] = outputs
    return header


def plain(header: dict[str, Any]) -> dict[str, Any]:
    """`header` with numpy data turned into lists, for callers that serialize it themselves."""
    for key in ("inputs", "outputs"):
        for entry in header.get(key) or ():
            data = entry.get("data")
            if data is not None and not isinstance(data, list):
                entry["data"] = data.tolist()
    return header


def _requested(name: str, parameters: dict[str, Any] | None, binary: bool | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name}
    params = dict(parameters or {})
    if binary is not None:
        params.pop(BINARY_DATA, None)
        if binary:
            params[BINARY_DATA] = True
    if params:
        entry["parameters"] = params
    return entry
