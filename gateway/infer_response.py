"""`InferResponse`: one v2 inference response, whichever protocol it came in or goes out on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway import messages
from gateway._proto import pb
from gateway.codecs import grpc as grpc_codec
from gateway.codecs import rest as rest_codec
from gateway.errors import InvalidInput
from gateway.tensor import Buffer, InferOutput, RequestedOutput, plain_parameters


class InferResponse:
    """An inference response: model, outputs and parameters.

    `use_binary_outputs` and `requested_outputs` come from the request being answered: they
    decide which outputs are sent, and whether as binary data (REST) or raw contents (gRPC).
    """

    def __init__(
        self,
        response_id: str,
        model_name: str,
        infer_outputs: list[InferOutput],
        model_version: str | None = None,
        raw_outputs: Sequence[Buffer] | None = None,
        from_grpc: bool | None = False,
        parameters: Mapping[str, Any] | None = None,
        use_binary_outputs: bool | None = False,
        requested_outputs: list[RequestedOutput] | None = None,
    ) -> None:
        self.id = response_id
        self.model_name = model_name
        self.model_version = model_version
        self.outputs = infer_outputs
        self.parameters = plain_parameters(parameters)
        # KServe's attribute shadows the `from_grpc` classmethod on instances, on purpose.
        self.from_grpc = bool(from_grpc)  # type: ignore[method-assign, assignment]
        self._use_binary_outputs = bool(use_binary_outputs)
        self._requested_outputs = requested_outputs
        if raw_outputs:
            if len(raw_outputs) != len(infer_outputs):
                raise InvalidInput(
                    f"{len(raw_outputs)} raw outputs for {len(infer_outputs)} outputs"
                )
            for tensor, raw in zip(infer_outputs, raw_outputs, strict=True):
                tensor.set_raw(raw)

    @classmethod
    def from_grpc(cls, response: Any) -> InferResponse:
        """From a `ModelInferResponse` (ours, or tritonclient's or kserve's)."""
        return cls._from_message(response, list(response.raw_output_contents))

    @classmethod
    def from_grpc_bytes(cls, data: Buffer) -> InferResponse:
        """From a serialized `ModelInferResponse`, raw contents left unparsed and uncopied."""
        message, raws = grpc_codec.parse_raw(
            data, grpc_codec.RAW_OUTPUT_FIELD, pb.ModelInferResponse
        )
        return cls._from_message(message, raws)

    @classmethod
    def _from_message(cls, message: Any, raws: Sequence[Buffer]) -> InferResponse:
        return cls(
            response_id=message.id,
            model_name=message.model_name,
            infer_outputs=messages.grpc_tensors(InferOutput, message.outputs, raws, "output"),
            model_version=message.model_version or None,
            from_grpc=True,
            parameters=message.parameters if len(message.parameters) else None,
            use_binary_outputs=bool(raws),
        )

    @classmethod
    def from_rest(cls, response: Mapping[str, Any]) -> InferResponse:
        """From a parsed JSON response."""
        return cls._from_header(dict(response), memoryview(b""))

    @classmethod
    def from_bytes(cls, res_bytes: Buffer, json_length: int | None) -> InferResponse:
        """From a REST body: JSON, followed by binary outputs when `json_length` is given."""
        header, tail = rest_codec.split_body(res_bytes, json_length)
        return cls._from_header(header, tail)

    @classmethod
    def _from_header(cls, header: dict[str, Any], tail: memoryview) -> InferResponse:
        outputs = messages.rest_tensors(InferOutput, header, "outputs", tail)
        return cls(
            response_id=rest_codec.read_str(header, "id") or "",
            model_name=rest_codec.read_str(header, "model_name") or "",
            infer_outputs=outputs,
            model_version=rest_codec.read_str(header, "model_version"),
            parameters=rest_codec.read_parameters(header, "response"),
            use_binary_outputs=len(tail) > 0,
        )

    def outputs_to_send(self) -> list[tuple[InferOutput, bool]]:
        """The outputs to send (the requested ones, when some were), each with whether it
        goes as binary: its own ``binary_data`` if it says, else the request-wide choice."""
        if not self._requested_outputs:
            return [(output, self._use_binary_outputs) for output in self.outputs]
        chosen = []
        for requested in self._requested_outputs:
            output = self.get_output_by_name(requested.name)
            if output is None:
                raise InvalidInput(
                    f"output {requested.name!r} was requested, "
                    f"but model {self.model_name!r} does not produce it"
                )
            binary = requested.binary_data
            chosen.append((output, self._use_binary_outputs if binary is None else binary))
        return chosen

    @property
    def use_binary_outputs(self) -> bool:
        """Whether outputs go as binary data (REST) or raw contents (gRPC) unless a requested
        output says otherwise: the choice of the request being answered."""
        return self._use_binary_outputs

    @use_binary_outputs.setter
    def use_binary_outputs(self, binary: bool) -> None:
        self._use_binary_outputs = bool(binary)

    @property
    def requested_outputs(self) -> list[RequestedOutput] | None:
        """The outputs the request being answered asked for (None: all of them)."""
        return self._requested_outputs

    @requested_outputs.setter
    def requested_outputs(self, requested: list[RequestedOutput] | None) -> None:
        self._requested_outputs = requested

    def to_rest(self) -> tuple[bytes | dict[str, Any], int | None]:
        """The REST body: a dict when all outputs are JSON, else bytes and the JSON length."""
        raws: list[Buffer] = []
        header = self._rest_header(raws, None)
        # KServe's names the model's version, None included.
        header = {
            "id": self.id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            **header,
        }
        return messages.rest_form(header, raws, "outputs", [t for t, _ in self.outputs_to_send()])

    def rest_body(self, binary: bool | None = None) -> tuple[bytes, int | None]:
        """The REST body as bytes, and its JSON length (None when nothing binary follows);
        each output binary or JSON as the client asked, unless `binary` forces one form."""
        raws: list[Buffer] = []
        return rest_codec.join_body(self._rest_header(raws, binary), raws)

    def to_json_dict(self) -> dict[str, Any]:
        """The v2 JSON form as a dict, every output's data in the JSON."""
        return rest_codec.plain(self._rest_header([], False))

    def _rest_header(self, raws: list[Buffer], binary: bool | None) -> dict[str, Any]:
        outputs = messages.rest_entries(
            ((t, chosen if binary is None else binary) for t, chosen in self.outputs_to_send()),
            raws,
        )
        return rest_codec.response_header(
            outputs, self.model_name, self.model_version, self.id, self.parameters
        )

    def to_grpc(self) -> pb.ModelInferResponse:
        """A `ModelInferResponse`: raw contents when the request came raw (or a type has no
        typed contents, FP16 and BF16), typed contents otherwise."""
        message, raws = self._message()
        message.raw_output_contents.extend(bytes(raw) for raw in raws)
        return message

    def to_grpc_bytes(self) -> bytes:
        """The serialized `ModelInferResponse`, with raw contents joined in one copy."""
        message, raws = self._message()
        return grpc_codec.join_raw(message.SerializeToString(), raws, grpc_codec.RAW_OUTPUT_FIELD)

    def _message(self) -> tuple[pb.ModelInferResponse, list[Buffer]]:
        message = pb.ModelInferResponse(
            model_name=self.model_name, model_version=self.model_version or "", id=self.id or ""
        )
        grpc_codec.fill_parameters(message.parameters, self.parameters)
        outputs = [output for output, _ in self.outputs_to_send()]
        raw = self._use_binary_outputs or grpc_codec.needs_raw(o.datatype for o in outputs)
        raws = messages.fill_grpc_tensors(message.outputs, outputs, raw)
        return message, raws

    def get_output_by_name(self, name: str) -> InferOutput | None:
        return next((tensor for tensor in self.outputs if tensor.name == name), None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InferResponse):
            return NotImplemented
        return (
            self.id,
            self.model_name,
            self.model_version,
            self.parameters or None,
            self.outputs,
        ) == (
            other.id,
            other.model_name,
            other.model_version,
            other.parameters or None,
            other.outputs,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, "
            f"outputs={self.outputs}, parameters={self.parameters})"
        )
