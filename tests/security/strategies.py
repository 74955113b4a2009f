"""Hypothesis strategies for hostile requests: what no honest client sends, and what almost
is an honest request."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
# Unknown to the protocol, though some look close.
BAD_DATATYPES = ["", "fp32", "FLOAT32", "STRING", "BYTES ", "INT128", "\u0130NT8"]
datatypes = st.sampled_from(DATATYPES) | st.sampled_from(BAD_DATATYPES)

# Dims that overflow sizes, numpy, or int64.
ABSURD_DIMS = [2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**64]
dims = st.integers(-2, 4) | st.sampled_from(ABSURD_DIMS)
shapes = (
    st.lists(dims, max_size=4)
    | st.lists(st.just(1), min_size=30, max_size=70)  # many dims
    | st.lists(st.sampled_from([2**16, 2**20]), min_size=2, max_size=5)  # a huge product
)

# Text a header value can carry (no control characters; some beyond ASCII).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x17F, blacklist_categories=("Cc",)),
    max_size=24,
).map(str.strip)
header_names = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)


@st.composite
def tensor_entries(draw: st.DrawFn, binary: bool = False) -> dict[str, Any]:
    """A v2 tensor object, about right or quite wrong."""
    entry: dict[str, Any] = {
        "name": draw(st.text(max_size=5) | json_values),
        "shape": draw(shapes | json_values),
        "datatype": draw(datatypes | json_values),
    }
    if binary:
        size = draw(st.integers(-2, 64) | st.sampled_from([2**31, 2**62, 2**64]) | json_values)
        entry["parameters"] = {"binary_data_size": size}
    elif draw(st.booleans()):
        entry["data"] = draw(st.lists(st.integers(-300, 300) | json_values, max_size=6))
    else:
        entry["data"] = draw(json_values)
    if draw(st.integers(0, 5)) == 0:  # now and then, parameters of any kind
        entry["parameters"] = draw(json_values)
    return entry


requested_outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(max_size=4) | json_values},
        optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": json_values})},
    ),
    max_size=2,
)


@st.composite
def v2_documents(draw: st.DrawFn, binary: bool = False) -> dict[str, Any]:
    """A v2 request body's JSON part."""
    document: dict[str, Any] = {
        "inputs": draw(st.lists(tensor_entries(binary), max_size=3) | json_values)
    }
    if draw(st.booleans()):
        document["id"] = draw(st.text(max_size=8) | json_values)
    if draw(st.booleans()):
        document["parameters"] = draw(
            st.fixed_dictionaries({}, optional={"binary_data_output": json_values})
            | st.dictionaries(st.text(max_size=4), json_values)
            | json_values
        )
    if draw(st.booleans()):
        document["outputs"] = draw(requested_outputs | json_values)
    return document


def segment(text: str) -> str:
    """`text` as one URL path segment."""
    return quote(text, safe="")


model_names = st.sampled_from(["echo", "headers", "nothere"]) | st.text(max_size=12)
versions = st.sampled_from(["1", "v2"]) | st.text(max_size=6)
