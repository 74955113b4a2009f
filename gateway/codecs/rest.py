"""The v2 REST body: JSON, optionally followed by binary tensor data (the binary extension).

A binary body is ``JSON header || tensor bytes...``; the ``Inference-Header-Content-Length``
HTTP header gives the JSON's length, and each binary tensor's ``binary_data_size`` parameter
its share of the rest, in order. Decoding slices the body (no copy); encoding joins once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from gateway.codecs import json_depth
from gateway.errors import InvalidInput
from gateway.tensor import RequestedOutput, Tensor

if TYPE_CHECKING:
    from gateway.infer_request import InferRequest
    from gateway.infer_response import InferResponse

INFERENCE_HEADER = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Parameters that describe REST framing only; they never travel to gRPC.
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
REST_ONLY = frozenset({BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT})

Buffer = bytes | bytearray | memoryview
T = TypeVar("T", bound=Tensor)


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


def read_tensors(cls: type[T], header: dict[str, Any], key: str, tail: memoryview) -> list[T]:
    """Build the tensors listed under `key`, taking binary ones from `tail` in order."""
    entries = header.get(key)
    if not isinstance(entries, list):
        raise InvalidInput(f"{key!r} must be a list of tensors")
    tensors: list[T] = []
    offset = 0
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInput(f"{key}[{index}] must be a JSON object")
        name = entry.get("name")
        if not isinstance(name, str):
            raise InvalidInput(f"{key}[{index}] needs a string 'name'")
        # Checked by the tensor itself.
        shape: Any = entry.get("shape")
        datatype: Any = entry.get("datatype")
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
            tensor = cls.from_raw(name, shape, datatype, raw, params or None)
            offset += size
        elif "data" in entry:
            tensor = cls(name, shape, datatype, data=entry["data"], parameters=params)
            tensor.as_numpy()  # check it now, so bad data is refused on arrival
        else:
            raise InvalidInput(f"tensor {name!r} has neither 'data' nor 'binary_data_size'")
        tensors.append(tensor)
    if offset != len(tail):
        raise InvalidInput(f"{len(tail) - offset} bytes after the binary tensors belong to none")
    return tensors


def read_requested_outputs(header: dict[str, Any]) -> list[RequestedOutput] | None:
    entries = header.get("outputs")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a string 'name'")
        outputs.append(RequestedOutput(entry["name"], read_parameters(entry, entry["name"])))
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


def tensor_entry(tensor: Tensor, binary: bool, raws: list[Buffer]) -> dict[str, Any]:
    """One tensor's JSON object; its bytes go to `raws` when `binary`."""
    entry: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
    }
    params = {k: v for k, v in (tensor.parameters or {}).items() if k != BINARY_DATA_SIZE}
    if binary:
        raw = tensor.wire_bytes()
        raws.append(raw)
        params[BINARY_DATA_SIZE] = len(raw)
    else:
        entry["data"] = tensor.json_data()
    if params:
        entry["parameters"] = params
    return entry


def join_body(header: dict[str, Any], raws: Sequence[Buffer]) -> tuple[bytes, int | None]:
    """Serialize a body; the JSON length is None when nothing binary follows."""
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raws:
        return head, None
    return b"".join([head, *raws]), len(head)


def encode_request(request: InferRequest, binary: bool | None) -> tuple[bytes, int | None]:
    """A request body. `binary` forces every tensor in or out of binary (inputs and outputs);
    None keeps each input's own preference and the request's parameters as they are."""
    raws: list[Buffer] = []
    return join_body(request_header(request, binary, raws), raws)


def request_header(
    request: InferRequest, binary: bool | None, raws: list[Buffer]
) -> dict[str, Any]:
    inputs = [tensor_entry(t, _binary(t, binary), raws) for t in request.inputs]
    header: dict[str, Any] = {"inputs": inputs}
    if request.id:
        header["id"] = request.id
    params = dict(request.parameters or {})
    if binary is not None:
        params.pop(BINARY_DATA_OUTPUT, None)
        if binary:
            params[BINARY_DATA_OUTPUT] = True
    if params:
        header["parameters"] = params
    if request.request_outputs:
        header["outputs"] = [_requested(o, binary) for o in request.request_outputs]
    return header


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """A response body, each output binary or JSON as the client asked."""
    raws: list[Buffer] = []
    return join_body(response_header(response, raws), raws)


def response_header(
    response: InferResponse, raws: list[Buffer], binary: bool | None = None
) -> dict[str, Any]:
    """The response's JSON; `binary` forces every output in or out of binary."""
    outputs = [
        tensor_entry(t, chosen if binary is None else binary, raws)
        for t, chosen in response.outputs_to_send()
    ]
    header: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        header["model_version"] = response.model_version
    if response.id:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
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


def _binary(tensor: Tensor, forced: bool | None) -> bool:
    if forced is not None:
        return forced
    if tensor._binary is not None:
        return tensor._binary
    return tensor._raw_data is not None


def _requested(output: RequestedOutput, binary: bool | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": output.name}
    params = dict(output.parameters or {})
    if binary is not None:
        params.pop(BINARY_DATA, None)
        if binary:
            params[BINARY_DATA] = True
    if params:
        entry["parameters"] = params
    return entry
