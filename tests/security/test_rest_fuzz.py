"""Every REST decoder, fuzzed through the real server: v1 and v2 JSON, the binary extension
(its header and its body), BYTES framing, CloudEvents in both modes, and requests that are
wrong in their method, path or headers.

The property is the same everywhere: a 2xx, or a 4xx with a JSON ``{"error": ...}``; never a
5xx or a dropped connection; and the server answers a good request right after. The codecs'
own fuzzing is in tests/test_invalid_input.py; here the whole server is in the loop.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.codecs import bytes_tensor
from gateway.header_rules import usable_request_id
from tests.security.harness import RELAYS, Answer, Gateway, LogCapture, check_answer, fuzzing
from tests.security.strategies import (
    header_names,
    header_text,
    json_values,
    model_names,
    segment,
    v2_documents,
    versions,
)

INFERENCE_HEADER = "Inference-Header-Content-Length"
# Models whose failures are the point of other tests: "boom" raises, "gone" has no upstream.
FUZZED_MODELS = model_names.filter(lambda name: name not in ("boom", "gone"))


def json_bytes(document: Any) -> bytes:
    # Not orjson: a client may send integers beyond 64 bits, which orjson cannot write.
    return json.dumps(document).encode()


def check_v2_answer(answer: Answer) -> None:
    """`check_answer`, and a 200 is a well-formed v2 response (JSON or binary)."""
    check_answer(answer)
    if answer.status != 200:
        return
    length = answer.header(INFERENCE_HEADER)
    if length is None:
        document = answer.json()
    else:
        assert answer.header("Content-Type") == "application/octet-stream"
        assert 0 <= int(length) <= len(answer.body)
        document = json.loads(answer.body[: int(length)])
        sizes = [
            (output.get("parameters") or {}).get("binary_data_size", 0)
            for output in document["outputs"]
        ]
        assert int(length) + sum(sizes) == len(answer.body)
    assert isinstance(document["outputs"], list)


# v2 JSON


@fuzzing(3)
@given(
    v2_documents(),
    FUZZED_MODELS,
    st.sampled_from(["infer", "explain"]),
    st.none() | versions,
)
def test_v2_json_bodies(
    gateway: Gateway, logs: LogCapture, document: Any, model: str, verb: str, version: str | None
) -> None:
    body = json_bytes(document)
    path = f"/v2/models/{segment(model)}"
    if version is not None:
        path += f"/versions/{segment(version)}"
    answer = gateway.http("POST", f"{path}/{verb}", body, {"Content-Type": "application/json"})
    check_v2_answer(answer)
    gateway.assert_rest_serving()
    logs.assert_no_forged_lines()


@fuzzing(2)
@given(st.binary(max_size=300) | json_values.map(json_bytes))
def test_v2_bodies_that_are_not_requests(gateway: Gateway, body: bytes) -> None:
    check_v2_answer(gateway.http("POST", "/v2/models/echo/infer", body))
    gateway.assert_rest_serving()


# The binary extension

inference_header_values = (
    st.integers(-(2**70), 2**70).map(str)
    | st.sampled_from(["", "-0", "+5", "1e3", " 7 ", "0x10", "1_0", "\u0663", "9" * 5000])
    | header_text
)


@fuzzing(3)
@given(
    v2_documents(binary=True),
    st.binary(max_size=96),
    st.none() | inference_header_values,
    st.sampled_from([None, "application/octet-stream", "application/json", "text/plain"]),
)
def test_binary_extension(
    gateway: Gateway,
    document: Any,
    tail: bytes,
    header_value: str | None,
    content_type: str | None,
) -> None:
    head = json_bytes(document)
    headers = {INFERENCE_HEADER: str(len(head)) if header_value is None else header_value}
    if content_type is not None:
        headers["Content-Type"] = content_type
    check_v2_answer(gateway.http("POST", "/v2/models/echo/infer", head + tail, headers))
    gateway.assert_rest_serving()


def good_binary_body() -> tuple[bytes, int]:
    header = {
        "inputs": [
            {"name": "f", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
        ],
        "parameters": {"binary_data_output": True},
    }
    head = orjson.dumps(header)
    return head + b"\x00" * 8 + b"\x02\x00\x00\x00ok", len(head)


GOOD_BINARY, GOOD_LENGTH = good_binary_body()


@fuzzing(3)
@given(st.data())
def test_binary_bodies_cut_and_flipped(gateway: Gateway, data: st.DataObject) -> None:
    body = bytearray(GOOD_BINARY)
    for _ in range(data.draw(st.integers(0, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    length = data.draw(st.sampled_from([GOOD_LENGTH, GOOD_LENGTH - 1, GOOD_LENGTH + 1, cut]))
    answer = gateway.http(
        "POST", "/v2/models/echo/infer", bytes(body[:cut]), {INFERENCE_HEADER: str(length)}
    )
    check_v2_answer(answer)
    gateway.assert_rest_serving()


# BYTES framing: the answer is exactly what a reference reading of the frames says.


def reference_frames(buffer: bytes) -> list[bytes] | None:
    """The elements of a framed buffer, or None if it is not one."""
    elements, offset = [], 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            return None
        length = int.from_bytes(buffer[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(buffer):
            return None
        elements.append(buffer[offset : offset + length])
        offset += length
    return elements


@st.composite
def framed_buffers(draw: st.DrawFn) -> tuple[bytes, int]:
    """A BYTES buffer whose frames may lie about their lengths, and a declared count."""
    parts = []
    elements = draw(st.lists(st.binary(max_size=12), max_size=5))
    for element in elements:
        declared = len(element) + draw(st.sampled_from([0, 0, 0, -1, 1, 4, 2**31, 2**32 - 1]))
        parts.append(max(0, min(declared, 2**32 - 1)).to_bytes(4, "little") + element)
    buffer = b"".join(parts) + draw(st.sampled_from([b"", b"", b"\x00", b"\x01\x00"]))
    count = len(elements) + draw(st.sampled_from([0, 0, -1, 1, 2**20]))
    return buffer, max(count, 0)


@fuzzing(3)
@given(framed_buffers())
def test_bytes_framing_rest_and_grpc(gateway: Gateway, framed: tuple[bytes, int]) -> None:
    buffer, count = framed
    expected = reference_frames(buffer)
    well_framed = expected is not None and len(expected) == count
    # REST, binary extension in and out.
    entry = {
        "name": "s",
        "shape": [count],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(buffer)},
    }
    head = orjson.dumps({"inputs": [entry], "parameters": {"binary_data_output": True}})
    answer = gateway.http(
        "POST", "/v2/models/echo/infer", head + buffer, {INFERENCE_HEADER: str(len(head))}
    )
    check_v2_answer(answer)
    if well_framed:
        assert answer.status == 200, answer
        # Echoed untouched: the output's bytes are the input's.
        assert answer.body[int(answer.header(INFERENCE_HEADER) or 0) :] == buffer
    else:
        assert answer.status == 400, answer
        assert "tensor 's'" in answer.json()["error"]
    # gRPC raw contents.
    from gateway._proto import pb

    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="s", datatype="BYTES", shape=[count])
    message.raw_input_contents.append(buffer)
    code, body, _ = gateway.grpc_call("ModelInfer", message.SerializeToString())
    if well_framed:
        assert isinstance(body, bytes), (code, body)
        response = pb.ModelInferResponse.FromString(body)
        assert list(response.raw_output_contents) == [buffer]
        assert bytes_tensor.unframe(response.raw_output_contents[0]) == expected
    else:
        assert code.name == "INVALID_ARGUMENT", (code, body)
        assert isinstance(body, str)
        assert "tensor 's'" in body


# v1


@fuzzing(3)
@given(
    json_values.map(json_bytes)
    | st.fixed_dictionaries({"instances": json_values}).map(json_bytes)
    | st.binary(max_size=200),
    FUZZED_MODELS,
    st.sampled_from(["predict", "explain"]),
    st.sampled_from(
        [None, "application/json", "application/json; charset=utf-8", "text/plain",
         "application/octet-stream", "application/x-www-form-urlencoded", "image/png",
         "application/ld+json", "application/vnd.api+json"]
    )
    | header_text,
)  # fmt: skip
def test_v1_bodies(
    gateway: Gateway, body: bytes, model: str, verb: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = gateway.http("POST", f"/v1/models/{segment(model)}:{verb}", body, headers)
    check_answer(answer)
    gateway.assert_rest_serving()


# CloudEvents

ce_values = st.none() | header_text | st.sampled_from(["1.0", "0.3", "2020-01-01T00:00:00Z"])


@fuzzing(3)
@given(
    st.fixed_dictionaries(
        {
            "ce-specversion": st.sampled_from(["1.0", "0.3", "", "2.0"]) | header_text,
            "ce-id": ce_values,
            "ce-source": ce_values,
            "ce-type": ce_values,
            "ce-time": ce_values,
            "ce-datacontenttype": st.none()
            | st.sampled_from(["application/json", "text/plain", "application/octet-stream"])
            | header_text,
            "content-type": st.none()
            | st.sampled_from(["application/json", "application/cloudevents+json", "text/plain"]),
        }
    ),
    st.dictionaries(header_names.map(lambda n: f"ce-{n}"), header_text, max_size=3),
    json_values.map(json_bytes)
    | st.fixed_dictionaries({"instances": json_values}).map(json_bytes)
    | st.binary(max_size=64),
    st.sampled_from(["predict", "explain"]),
)
def test_cloudevents_binary_mode(
    gateway: Gateway,
    attributes: dict[str, str | None],
    extensions: dict[str, str],
    body: bytes,
    verb: str,
) -> None:
    headers = {k: v for k, v in {**extensions, **attributes}.items() if v is not None}
    answer = gateway.http("POST", f"/v1/models/echo:{verb}", body, headers)
    check_answer(answer)
    gateway.assert_rest_serving()


ce_attributes = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3"]) | json_values,
        "id": st.text(max_size=5) | json_values,
        "source": st.text(max_size=5) | json_values,
        "type": st.text(max_size=5) | json_values,
        "time": st.sampled_from(["2020-01-01T00:00:00Z", "yesterday"]) | json_values,
        "datacontenttype": st.sampled_from(["application/json", "text/plain"]) | json_values,
        "data": st.fixed_dictionaries({"instances": json_values}) | json_values,
        "data_base64": st.sampled_from(["eyJpbnN0YW5jZXMiOiBbMV19", "!!"]) | json_values,
        "ext": json_values,
    },
)


@fuzzing(3)
@given(
    ce_attributes.map(json_bytes) | json_values.map(json_bytes) | st.binary(max_size=100),
    st.sampled_from(["application/cloudevents+json", "application/cloudevents+json; charset=x"]),
)
@example(b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": [1]}', "")
def test_cloudevents_structured_mode(gateway: Gateway, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type or "application/cloudevents+json"}
    check_answer(gateway.http("POST", "/v1/models/echo:predict", body, headers))
    gateway.assert_rest_serving()


# Methods, paths and headers

paths = st.one_of(
    st.sampled_from(
        ["/", "/metrics", "/v1/models", "/v2", "/v2/health/live", "/v2/health/ready",
         "/v2/models", "/v2/repository/index", "/nothing", "//", "/v2/models/",
         "/v1/models/echo:nothing", "/%2e%2e/%2e%2e/etc/passwd", "/v2/models/echo/infer/"]
    ),
    st.builds(lambda m: f"/v1/models/{segment(m)}", FUZZED_MODELS),
    st.builds(lambda m, v: f"/v1/models/{segment(m)}:{v}", FUZZED_MODELS,
              st.sampled_from(["predict", "explain"])),
    st.builds(lambda m, s: f"/v2/models/{segment(m)}{s}", FUZZED_MODELS,
              st.sampled_from(["", "/ready", "/infer", "/explain"])),
    st.builds(lambda m, v, s: f"/v2/models/{segment(m)}/versions/{segment(v)}{s}",
              FUZZED_MODELS, versions, st.sampled_from(["", "/ready", "/infer"])),
    # Load only: unloading the echo model would take it from the other tests.
    st.builds(lambda m: f"/v2/repository/models/{segment(m)}/load", FUZZED_MODELS),
)  # fmt: skip


@fuzzing(3)
@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    paths,
    st.none() | st.text(max_size=10).map(lambda q: segment(q).replace("%3D", "=")),
    st.dictionaries(header_names, header_text, max_size=4),
    st.binary(max_size=64) | json_values.map(json_bytes),
)
def test_any_method_path_and_headers(
    gateway: Gateway,
    method: str,
    path: str,
    query: str | None,
    headers: dict[str, str],
    body: bytes,
) -> None:
    headers = {k: v for k, v in headers.items() if k.lower() not in _FRAMING}
    target = path if query is None else f"{path}?{query}"
    answer = gateway.http(method, target, body, headers)
    if method == "HEAD":  # no body to check
        assert answer.status < 500, answer
    else:
        check_answer(answer)
    gateway.assert_rest_serving()


# Lengths and framing are the subject of other tests; these would make the request invalid
# HTTP, which aiohttp's parser refuses before the gateway sees it.
_FRAMING = frozenset({"content-length", "transfer-encoding", "host", "connection", "upgrade"})

timeouts = (
    st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.integers(-10, 10**30).map(str)
    | header_text
)


@fuzzing(3)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "x-request-id": header_text,
            "x-request-timeout": timeouts,
            "x-envoy-expected-rq-timeout-ms": timeouts,
            "Content-Type": header_text,
            "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity"])
            | header_text,
            "Expect": st.sampled_from(["100-continue", "nothing"]) | header_text,
            "ce-specversion": header_text,
            "traceparent": header_text,
            "baggage": header_text,
        },
    ),
    st.sampled_from(["/v2/models/echo/infer", "/v1/models/echo:predict", "/v2/models/echo"]),
)
def test_known_headers_with_hostile_values(
    gateway: Gateway, logs: LogCapture, headers: dict[str, str], path: str
) -> None:
    body = orjson.dumps({"instances": [1]} if ":predict" in path else {"inputs": []})
    answer = gateway.http("POST" if path.endswith(("infer", "predict")) else "GET", path, body,
                          headers)  # fmt: skip
    check_answer(answer)
    request_id = headers.get("x-request-id")
    if request_id:
        echoed = answer.header("x-request-id") or ""
        if usable_request_id(request_id):  # the same bytes back
            assert echoed == request_id
        else:  # not printable ASCII, or too long: replaced by one of ours
            assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
    gateway.assert_rest_serving()
    logs.assert_no_forged_lines()


# Through a hop: the same hostile bodies, forwarded to a predictor in each protocol (passed
# through untouched when the protocols match, converted otherwise).


@fuzzing(3)
@given(
    v2_documents(),
    st.sampled_from(sorted(RELAYS)),
    st.dictionaries(st.sampled_from(["x-request-id", "traceparent", "baggage"]), header_text),
)
def test_v2_bodies_through_a_hop(
    gateway: Gateway, document: Any, model: str, headers: dict[str, str]
) -> None:
    # (Explain is not tried: these models have no explainer, a 500 by configuration.)
    answer = gateway.http("POST", f"/v2/models/{model}/infer", json_bytes(document), headers)
    check_v2_answer(answer)
    gateway.assert_rest_serving()


@fuzzing(3)
@given(v2_documents(binary=True), st.binary(max_size=64), st.sampled_from(sorted(RELAYS)))
def test_binary_bodies_through_a_hop(
    gateway: Gateway, document: Any, tail: bytes, model: str
) -> None:
    head = json_bytes(document)
    headers = {INFERENCE_HEADER: str(len(head))}
    check_v2_answer(gateway.http("POST", f"/v2/models/{model}/infer", head + tail, headers))
    gateway.assert_rest_serving()


@fuzzing(3)
@given(
    json_values.map(json_bytes)
    | st.fixed_dictionaries({"instances": json_values}).map(json_bytes)
    | st.binary(max_size=100),
    st.sampled_from(sorted(RELAYS)),
    st.sampled_from([None, "application/json", "text/plain", "application/octet-stream"]),
)
def test_v1_bodies_through_a_hop(
    gateway: Gateway, body: bytes, model: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    check_answer(gateway.http("POST", f"/v1/models/{model}:predict", body, headers))
    gateway.assert_rest_serving()
