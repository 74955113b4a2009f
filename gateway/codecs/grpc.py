"""The v2 gRPC messages: tensors to and from protobuf, raw contents kept out of protobuf.

Raw tensor bytes (``raw_input_contents`` = field 7 of ModelInferRequest,
``raw_output_contents`` = field 6 of ModelInferResponse) are large and opaque, so they never
pass through the protobuf runtime here: `join_raw` appends them to the serialized rest of the
message (protobuf concatenation appends repeated fields) and `split_raw` slices them out of a
received message before protobuf parses what is left. One copy to send, none to receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gateway import lazy_numpy, offload
from gateway._proto import pb
from gateway.codecs import bytes_tensor
from gateway.codecs.datatypes import CONTENTS_FIELD, check_datatype
from gateway.codecs.limits import DecodeLimits, ValueBudget
from gateway.codecs.parameters import fill_grpc_parameters, to_http_parameters
from gateway.codecs.rest import REST_ONLY
from gateway.codecs.tensor_fields import TensorFields
from gateway.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]
else:
    np = lazy_numpy.bind(globals())

RAW_INPUT_FIELD = pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER
RAW_OUTPUT_FIELD = pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER

Buffer = bytes | bytearray | memoryview

# Top-level fields of one message: a few per tensor (its description and raw contents) and
# per parameter. Far above any real request, low enough that walking them is quick.
MAX_FIELDS = 8192


def read_tensors(
    messages: Sequence[Any], raws: Sequence[Buffer], kind: str, budget: ValueBudget | None = None
) -> Iterator[TensorFields]:
    """The tensors of `InferInputTensor` / `InferOutputTensor` messages and raw contents;
    typed contents are counted against `budget` before they become Python values.

    A generator: the caller builds each tensor before the next is read, so the first fault
    is the one reported."""
    if raws and len(raws) != len(messages):
        raise InvalidInput(f"{len(raws)} raw contents for {len(messages)} {kind}s")
    for index, message in enumerate(messages):
        name, datatype = message.name, message.datatype
        params = to_http_parameters(message.parameters) if len(message.parameters) else None
        has_contents = message.HasField("contents") and message.contents.ByteSize() > 0
        if raws:
            if has_contents:
                raise InvalidInput(f"tensor {name!r} has both contents and raw contents")
            yield TensorFields(name, list(message.shape), datatype, params, raws[index], None)
        else:
            field = CONTENTS_FIELD.get(check_datatype(datatype, name))
            if field is None:
                raise InvalidInput(f"tensor {name!r}: {datatype} travels only as raw contents")
            contents = getattr(message.contents, field)
            if budget is not None:
                budget.take(len(contents), name)
            values = list(contents)
            yield TensorFields(name, list(message.shape), datatype, params, None, values)


def read_requested_outputs(messages: Sequence[Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The outputs a request asks for: (name, parameters) each."""
    return [
        (m.name, to_http_parameters(m.parameters) if len(m.parameters) else None) for m in messages
    ]


def describe_tensor(
    message: Any, name: str, datatype: str, shape: Sequence[int], parameters: dict[str, Any] | None
) -> None:
    """Name, datatype, shape and parameters of a tensor into its message."""
    message.name = name
    message.datatype = datatype
    message.shape.extend(shape)
    fill_parameters(message.parameters, parameters)


def fill_contents(message: Any, datatype: str, name: str, array: Array) -> None:
    """A tensor's values into its message's typed contents (`datatype` must have a field)."""
    flat = array.ravel()
    field = CONTENTS_FIELD[datatype]
    if datatype == "BYTES":
        values: Iterable[Any] = [bytes_tensor.element_bytes(v, name) for v in flat]
    else:
        values = flat.tolist()
    getattr(message.contents, field).extend(values)


def fill_parameters(target: Any, params: dict[str, Any] | None) -> None:
    if params:
        fill_grpc_parameters(target, {k: v for k, v in params.items() if k not in REST_ONLY})


def needs_raw(datatypes: Iterable[str]) -> bool:
    """Whether some datatype has no typed-contents field (FP16, BF16), forcing raw for all."""
    return any(datatype not in CONTENTS_FIELD for datatype in datatypes)


M = TypeVar("M")


def parse_raw(
    data: Buffer, field: int, message_type: type[M], limits: DecodeLimits | None = None
) -> tuple[M, list[memoryview]]:
    """Parse a serialized message with its raw contents (`field`) sliced out, not copied;
    what protobuf parses (the rest) within `limits`."""
    head, raws = split_raw(data, field)
    if limits is not None:
        limits.check_grpc(len(head))
    try:
        message = message_type.FromString(head)  # type: ignore[attr-defined]
    except Exception as exc:  # protobuf's DecodeError differs between runtimes
        raise InvalidInput(f"malformed {message_type.__name__}: {exc}") from None
    return message, raws


def join_raw(head: bytes, raws: Sequence[Buffer], field: int) -> bytes:
    """Append `raws` as repeated bytes `field` to a serialized message."""
    if not raws:
        return head
    tag = bytes([field << 3 | 2])
    parts: list[Buffer] = [head]
    for raw in raws:
        parts += (tag, _varint(len(raw)), raw)
    return b"".join(parts)


def split_raw(data: Buffer, field: int) -> tuple[bytes, list[memoryview]]:
    """Slice every repeated-bytes `field` out of a serialized message.

    Returns the rest of the message (for protobuf to parse) and views of the field's values.
    """
    view = memoryview(data).cast("B")
    pieces: list[memoryview] = []
    raws: list[memoryview] = []
    kept_from = 0
    for number, start, end, value in _top_level_fields(view):
        if number == field and value is not None:
            pieces.append(view[kept_from:start])
            raws.append(value)
            kept_from = end
    if not raws:
        return (data if isinstance(data, bytes) else bytes(view)), raws
    pieces.append(view[kept_from:])
    return b"".join(pieces), raws


def decode_weight(data: Buffer, field: int) -> int:
    """How much work decoding a message is (`gateway.offload.weight`): what protobuf parses,
    and its raw contents (`field`) when a BYTES tensor may be among them."""
    if offload.weight(0, len(data)) < offload.HEAVY:
        return offload.weight(len(data))  # light whatever it holds: no walk of its fields
    head = raw = 0
    mentions_bytes = False
    for number, start, end, value in _top_level_fields(memoryview(data).cast("B")):
        if number == field and value is not None:
            raw += len(value)
        else:
            head += end - start
            if value is not None and len(value) < offload.HEAVY:
                mentions_bytes = mentions_bytes or b"BYTES" in bytes(value).upper()
    return offload.weight(head, raw if mentions_bytes else 0)


def string_field(data: Buffer, field: int) -> str:
    """The value of top-level string `field` (the last one, as protobuf reads it); "" if unset.

    Lets a server route a message (by model name) without parsing the rest of it.
    """
    found: memoryview | None = None
    for number, _, _, value in _top_level_fields(memoryview(data).cast("B")):
        if number == field and value is not None:
            found = value
    if found is None:
        return ""
    try:
        return bytes(found).decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"protobuf field {field} is not UTF-8 text") from None


def _top_level_fields(view: memoryview) -> Iterator[tuple[int, int, int, memoryview | None]]:
    """Each field's number, where it starts and ends, and its value if length-delimited.

    At most `MAX_FIELDS` of them: the walk runs on the event loop (to route a message by its
    model name), one Python step per field."""
    size = len(view)
    pos = 0
    fields = 0
    while pos < size:
        fields += 1
        if fields > MAX_FIELDS:
            raise InvalidInput(
                f"the message has more than {MAX_FIELDS} top-level fields (tensors, raw "
                "contents, parameters)"
            )
        start = pos
        key, pos = _read_varint(view, pos)
        wire_type, number = key & 7, key >> 3
        value = None
        if wire_type == 0:
            _, pos = _read_varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _read_varint(view, pos)
            value = view[pos : pos + length]
            pos += length
        else:
            raise InvalidInput(f"malformed protobuf message: wire type {wire_type} at {start}")
        if pos > size:
            raise InvalidInput("truncated protobuf message")
        yield number, start, pos, value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(view) and shift < 64:
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise InvalidInput("truncated or malformed protobuf varint")
