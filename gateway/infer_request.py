"""`InferRequest`: one v2 inference request, whichever protocol it came in or goes out on."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from gateway import messages
from gateway._proto import pb
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import rest as rest_codec
from gateway.errors import InvalidInput
from gateway.tensor import Buffer, InferInput, RequestedOutput, plain_parameters


class InferRequest:
    """An inference request: model, inputs, requested outputs and parameters."""

    def __init__(
        self,
        model_name: str,
        infer_inputs: list[InferInput],
        request_id: str | None = None,
        raw_inputs: Sequence[Buffer] | None = None,
        from_grpc: bool | None = False,
        parameters: Mapping[str, Any] | None = None,
        request_outputs: list[RequestedOutput] | None = None,
        model_version: str | None = None,
    ) -> None:
        self.id = request_id
        self.model_name = model_name
        self.model_version = model_version
        self.inputs = infer_inputs
        self.parameters = plain_parameters(parameters)
        # KServe's attribute shadows the `from_grpc` classmethod on instances, on purpose.
        self.from_grpc = bool(from_grpc)  # type: ignore[method-assign, assignment]
        self.request_outputs = request_outputs
        self._use_raw_outputs = False
        if raw_inputs:
            if len(raw_inputs) != len(infer_inputs):
                raise InvalidInput(f"{len(raw_inputs)} raw inputs for {len(infer_inputs)} inputs")
            for tensor, raw in zip(infer_inputs, raw_inputs, strict=True):
                tensor.set_raw(raw)
            self._use_raw_outputs = True

    @property
    def use_binary_outputs(self) -> bool:
        """Whether outputs go back as binary: raw contents on gRPC when the inputs came raw;
        on REST the ``binary_data_output`` parameter (each output's ``binary_data`` wins)."""
        if self.__dict__["from_grpc"]:
            return self._use_raw_outputs
        return bool((self.parameters or {}).get(rest_codec.BINARY_DATA_OUTPUT, False))

    @classmethod
    def from_grpc(cls, request: Any) -> InferRequest:
        """From a `ModelInferRequest` (ours, or tritonclient's or kserve's)."""
        return cls._from_message(request, list(request.raw_input_contents))

    @classmethod
    def from_grpc_bytes(cls, data: Buffer) -> InferRequest:
        """From a serialized `ModelInferRequest`, its raw contents left unparsed and uncopied."""
        message, raws = grpc_codec.parse_raw(data, grpc_codec.RAW_INPUT_FIELD, pb.ModelInferRequest)
        return cls._from_message(message, raws)

    @classmethod
    def _from_message(cls, message: Any, raws: Sequence[Buffer]) -> InferRequest:
        request = cls(
            model_name=message.model_name,
            infer_inputs=messages.grpc_tensors(InferInput, message.inputs, raws, "input"),
            request_id=message.id or None,
            from_grpc=True,
            parameters=message.parameters if len(message.parameters) else None,
            request_outputs=messages.requested_outputs(
                grpc_codec.read_requested_outputs(message.outputs) or None
            ),
            model_version=message.model_version or None,
        )
        request._use_raw_outputs = bool(raws)
        return request

    @classmethod
    def from_bytes(
        cls, req_bytes: Buffer, json_length: int | None, model_name: str
    ) -> InferRequest:
        """From a REST body: JSON, followed by binary tensors when `json_length` is given."""
        header, tail = rest_codec.split_body(req_bytes, json_length)
        return cls(
            model_name=model_name,
            infer_inputs=messages.rest_tensors(InferInput, header, "inputs", tail),
            request_id=rest_codec.read_str(header, "id"),
            parameters=rest_codec.read_parameters(header, "request"),
            request_outputs=messages.requested_outputs(rest_codec.read_requested_outputs(header)),
        )

    @classmethod
    def from_inference_request(cls, request: Any, model_name: str) -> InferRequest:
        """From a parsed JSON request: a dict, or an object with the same fields."""
        header = dict(_as_mapping(request))
        inputs = header.get("inputs")
        header["inputs"] = [] if inputs is None else _as_entries(inputs)
        if header.get("outputs") is not None:
            header["outputs"] = _as_entries(header["outputs"])
        return cls(
            model_name=model_name,
            infer_inputs=messages.rest_tensors(InferInput, header, "inputs", memoryview(b"")),
            request_id=rest_codec.read_str(header, "id"),
            parameters=rest_codec.read_parameters(header, "request"),
            request_outputs=messages.requested_outputs(rest_codec.read_requested_outputs(header)),
        )

    def to_rest(self) -> tuple[bytes | dict[str, Any], int | None]:
        """The REST body: a dict when all inputs are JSON, else bytes and the JSON length."""
        raws: list[Buffer] = []
        header = self._rest_header(None, raws)
        # KServe's names the request (a new id when it has none) and its model.
        header = {"id": self.id or str(uuid.uuid4()), "model_name": self.model_name, **header}
        return messages.rest_form(header, raws, "inputs", self.inputs)

    def rest_body(self, binary: bool | None = None) -> tuple[bytes, int | None]:
        """The REST body as bytes, and its JSON length (None when nothing binary follows).

        `binary` forces every tensor in or out of binary (inputs and the answer's outputs);
        None keeps each input's own preference and the request's parameters as they are."""
        raws: list[Buffer] = []
        return rest_codec.join_body(self._rest_header(binary, raws), raws)

    def _rest_header(self, binary: bool | None, raws: list[Buffer]) -> dict[str, Any]:
        inputs = messages.rest_entries(
            ((t, t.prefers_binary if binary is None else binary) for t in self.inputs), raws
        )
        requested = [(o.name, o.parameters) for o in self.request_outputs or ()]
        return rest_codec.request_header(inputs, self.id, self.parameters, requested, binary)

    def to_grpc(self) -> pb.ModelInferRequest:
        """A `ModelInferRequest`; tensor data always travels as raw contents."""
        message, raws = self._message()
        message.raw_input_contents.extend(bytes(raw) for raw in raws)
        return message

    def to_grpc_bytes(self) -> bytes:
        """The serialized `ModelInferRequest`, with raw contents joined in one copy."""
        message, raws = self._message()
        return grpc_codec.join_raw(message.SerializeToString(), raws, grpc_codec.RAW_INPUT_FIELD)

    def _message(self) -> tuple[pb.ModelInferRequest, list[Buffer]]:
        message = pb.ModelInferRequest(
            model_name=self.model_name, model_version=self.model_version or "", id=self.id or ""
        )
        grpc_codec.fill_parameters(message.parameters, self.parameters)
        raws = messages.fill_grpc_tensors(message.inputs, self.inputs, raw=True)
        for output in self.request_outputs or ():
            requested = message.outputs.add(name=output.name)
            grpc_codec.fill_parameters(requested.parameters, output.parameters)
        return message, raws

    def as_dataframe(self) -> pd.DataFrame:
        """The inputs as columns: [N] or [N, 1] inputs as one column each, wider inputs as a
        column of row arrays. BYTES become text where they are UTF-8."""
        columns: dict[str, Any] = {}
        for tensor in self.inputs:
            array = tensor.as_numpy()
            if tensor.datatype == "BYTES":
                array = array.copy()
                for index, value in enumerate(array.flat):
                    with contextlib.suppress(UnicodeDecodeError):
                        array.flat[index] = value.decode()
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            columns[tensor.name] = array if array.ndim <= 1 else list(array)
        frame: pd.DataFrame = pd.DataFrame(columns)
        return frame

    def get_input_by_name(self, name: str) -> InferInput | None:
        return next((tensor for tensor in self.inputs if tensor.name == name), None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferRequest):
            return NotImplemented
        return (
            self.id,
            self.model_name,
            self.model_version,
            self.parameters or None,
            self.inputs,
            self.request_outputs or None,
        ) == (
            other.id,
            other.model_name,
            other.model_version,
            other.parameters or None,
            other.inputs,
            other.request_outputs or None,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"InferRequest(model_name={self.model_name!r}, id={self.id!r}, "
            f"inputs={self.inputs}, parameters={self.parameters}, "
            f"request_outputs={self.request_outputs}, from_grpc={self.from_grpc})"
        )


def _as_entries(entries: Any) -> Any:
    """Tensors or outputs as dicts; what is not a list stays, for the codec to refuse."""
    if not isinstance(entries, list | tuple):
        return entries
    return [dict(_as_mapping(entry)) for entry in entries]


def _as_mapping(obj: Any) -> Mapping[str, Any]:
    """A request or tensor as a mapping: a dict, a pydantic model (KServe's), or attributes."""
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=True)  # type: ignore[no-any-return]
    names = ("id", "parameters", "inputs", "outputs", "name", "shape", "datatype", "data")
    return {name: getattr(obj, name) for name in names if getattr(obj, name, None) is not None}
