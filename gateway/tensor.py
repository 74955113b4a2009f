"""Tensors of a request or response: `InferInput`, `InferOutput` and `RequestedOutput`.

A tensor holds its data in the form it arrived in and converts only when read:

- ``_raw_data``: wire bytes (binary extension or gRPC raw contents), length already checked;
  `as_numpy()` is a read-only ``np.frombuffer`` view of them;
- ``_data``: a JSON list, a numpy array (from `set_data_from_numpy`) or gRPC typed contents.

Exactly one of the two is set once a tensor has data. Reading `data` of a raw tensor turns it
into a list once (as KServe's `data` is), so that changes to that list are what gets sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway import lazy_numpy
from gateway.codecs import arrays
from gateway.codecs.datatypes import CONTENTS_FIELD, FLOATS, check_datatype, from_numpy_dtype
from gateway.codecs.parameters import Parameters, to_http_parameters
from gateway.errors import InferenceError, InvalidInput

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]
else:
    np = lazy_numpy.bind(globals())

Buffer = bytes | bytearray | memoryview


def plain_parameters(parameters: Mapping[str, Any] | None) -> Parameters | None:
    """Parameters as a plain dict, whether they came as JSON or as a protobuf map."""
    return None if parameters is None else to_http_parameters(parameters)


class Tensor:
    """What `InferInput` and `InferOutput` share: name, shape, datatype, parameters, data."""

    def __init__(
        self,
        name: str,
        shape: list[int],
        datatype: str,
        data: Any = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._datatype = check_datatype(
            datatype.upper() if isinstance(datatype, str) else datatype, name
        )
        arrays.element_count(shape, name)
        self._shape = [int(dim) for dim in shape]
        self._parameters = plain_parameters(parameters)
        self._data: Any = data
        self._raw_data: Buffer | None = None
        # The checked array of list data, computed once; dropped whenever the list may change.
        self._array: Array | None = None
        # How the sender wants it on REST: True binary, False JSON, None unspecified.
        self._binary: bool | None = None

    @classmethod
    def from_raw(
        cls,
        name: str,
        shape: list[int],
        datatype: str,
        raw: Buffer,
        parameters: Mapping[str, Any] | None = None,
    ) -> Any:
        """A tensor over wire bytes, checked against shape and datatype (not copied)."""
        tensor = cls(name, shape, datatype, parameters=parameters)
        tensor.set_raw(raw)
        return tensor

    def set_raw(self, raw: Buffer) -> None:
        """Set the data to wire bytes, after checking them against shape and datatype."""
        arrays.check_raw(raw, self._datatype, self._shape, self._name)
        self._raw_data = raw
        self._data = self._array = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def datatype(self) -> str:
        return self._datatype

    @property
    def shape(self) -> list[int]:
        return self._shape

    @shape.setter
    def shape(self, shape: list[int]) -> None:
        arrays.element_count(shape, self._name)
        self._shape = [int(dim) for dim in shape]
        self._array = None

    @property
    def parameters(self) -> Parameters | None:
        return self._parameters

    @parameters.setter
    def parameters(self, params: Mapping[str, Any] | None) -> None:
        self._parameters = plain_parameters(params)

    @property
    def data(self) -> Any:
        """The tensor's data: a flat list for wire data, else what was set."""
        if self._data is None and self._raw_data is not None:
            self._data = self.as_numpy().ravel().tolist()
            self._drop_raw()
        self._array = None
        return self._data

    @data.setter
    def data(self, data: Any) -> None:
        self._data = data
        self._drop_raw()
        self._array = None

    def _drop_raw(self) -> None:
        # Data that arrived binary keeps going out binary once it is a list: reading or
        # replacing it must not switch it to JSON, which cannot carry NaN or non-UTF-8 bytes.
        if self._raw_data is not None and self._binary is None:
            self._binary = True
        self._raw_data = None

    def has_data(self) -> bool:
        return self._data is not None or self._raw_data is not None

    def given_list(self) -> list[Any] | None:
        """The data when it was set as a Python list (as given: nested, say); else None."""
        return self._data if isinstance(self._data, list) else None

    @property
    def is_raw(self) -> bool:
        """Whether the data is the wire bytes it arrived as (binary extension or gRPC raw
        contents), not yet decoded: `wire_bytes()` gives them back as they came."""
        return self._raw_data is not None

    @property
    def prefers_binary(self) -> bool:
        """How it goes on REST when the sender forces neither form: as `set_data_from_numpy`'s
        `binary_data` said, else binary when it arrived binary."""
        if self._binary is not None:
            return self._binary
        return self._raw_data is not None

    def as_numpy(self) -> Array:
        """The data as an array of `shape`.

        Received data (raw or JSON) gives a read-only array, a view with no copy for raw
        fixed-size data: copy it before writing. BYTES gives an object array of ``bytes``;
        BF16, which numpy lacks, gives float32 (widened exactly).
        """
        name, datatype, shape = self._name, self._datatype, self._shape
        if self._raw_data is not None:
            return arrays.from_raw(self._raw_data, datatype, shape, name)
        data = self._data
        if data is None:
            raise InvalidInput(f"tensor {name!r} has no data")
        if isinstance(data, np.ndarray):
            array = arrays.coerce(data, datatype, name)
            if array.shape == tuple(shape):  # as set_data_from_numpy leaves it: checked
                return array
            if array.size != arrays.element_count(shape, name):
                raise InvalidInput(
                    f"tensor {name!r}: array of {array.size} elements does not fit shape {shape}"
                )
            return array.reshape(shape)
        if self._array is None:
            field = CONTENTS_FIELD.get(datatype)
            if field is not None and hasattr(data, field):  # gRPC InferTensorContents
                data = list(getattr(data, field))
            array = arrays.from_json(data, datatype, shape, name)
            array.flags.writeable = False
            self._array = array
        return self._array

    def as_string(self) -> list[Any]:
        """BYTES data decoded as UTF-8 text, nested as the shape is."""
        if self._datatype != "BYTES":
            raise InvalidInput(f"tensor {self._name!r} is {self._datatype}, not BYTES")
        flat = self.as_numpy().ravel()
        try:
            text = np.array([element.decode() for element in flat], dtype=np.object_)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"tensor {self._name!r}: an element is not UTF-8 text") from exc
        return text.reshape(self._shape).tolist()  # type: ignore[no-any-return]

    def set_data_from_numpy(self, input_tensor: Array, binary_data: bool = True) -> None:
        """Set the data from an array of this tensor's datatype and shape (kept, not copied).

        `binary_data` chooses how a REST request sends it: after the JSON (True) or in it.
        """
        if not isinstance(input_tensor, np.ndarray):
            raise InferenceError("input_tensor must be a numpy array")
        datatype = from_numpy_dtype(input_tensor.dtype)
        if self._datatype == "BF16":
            if input_tensor.dtype.kind != "f" and input_tensor.dtype.name != "bfloat16":
                raise InferenceError(f"BF16 takes a float array, got {input_tensor.dtype}")
        elif datatype != self._datatype:
            raise InferenceError(
                f"got unexpected datatype {datatype} from numpy array, expected {self._datatype}"
            )
        if list(input_tensor.shape) != self._shape:
            raise InferenceError(
                f"got unexpected numpy array shape {list(input_tensor.shape)}, "
                f"expected {self._shape}"
            )
        if datatype == "BYTES" and not binary_data:
            try:
                arrays.to_json(input_tensor, "BYTES", self._name)
            except InvalidInput as exc:
                raise InferenceError(f"{exc}; use binary_data=True") from exc
        self.data = input_tensor
        self._binary = binary_data

    def wire_bytes(self) -> Buffer:
        """The data as binary-extension / gRPC raw bytes (the received bytes when unchanged)."""
        if self._raw_data is not None:
            return self._raw_data
        return arrays.to_raw(self.as_numpy(), self._datatype, self._name)

    def json_data(self) -> Array | list[str]:
        """The data as flat JSON ``data`` (an array orjson writes, or text for BYTES)."""
        return arrays.to_json(self.as_numpy(), self._datatype, self._name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor) or type(other) is not type(self):
            return NotImplemented
        if (self._name, self._datatype, self._shape, self._parameters or None) != (
            other._name,
            other._datatype,
            other._shape,
            other._parameters or None,
        ):
            return False
        if not (self.has_data() and other.has_data()):
            return self.has_data() == other.has_data()
        equal_nan = self._datatype in FLOATS
        return bool(np.array_equal(self.as_numpy(), other.as_numpy(), equal_nan=equal_nan))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "raw" if self._raw_data is not None else type(self._data).__name__
        return (
            f"{type(self).__name__}(name={self._name!r}, shape={self._shape}, "
            f"datatype={self._datatype!r}, data=<{kind}>, parameters={self._parameters})"
        )


class InferInput(Tensor):
    """An input tensor of an inference request."""


class InferOutput(Tensor):
    """An output tensor of an inference response."""

    def set_data_from_numpy(self, output_tensor: Array, binary_data: bool = True) -> None:
        """As `Tensor.set_data_from_numpy`, under KServe's name for an output's array."""
        super().set_data_from_numpy(output_tensor, binary_data)


class RequestedOutput:
    """An output a request asks for, with its parameters (``binary_data`` among them)."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        self._name = name
        self._parameters = plain_parameters(parameters)

    @property
    def name(self) -> str:
        return self._name

    @property
    def parameters(self) -> Parameters | None:
        return self._parameters

    @parameters.setter
    def parameters(self, params: Mapping[str, Any] | None) -> None:
        self._parameters = plain_parameters(params)

    @property
    def binary_data(self) -> bool | None:
        """Whether the client wants this output as binary data; None when it did not say."""
        if self._parameters and "binary_data" in self._parameters:
            return bool(self._parameters["binary_data"])
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestedOutput):
            return NotImplemented
        return (self._name, self._parameters or None) == (other._name, other._parameters or None)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RequestedOutput(name={self._name!r}, parameters={self._parameters})"
