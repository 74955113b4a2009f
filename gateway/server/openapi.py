"""The OpenAPI 3 document of the REST routes, built from the route table so the two cannot
drift, and a self-contained HTML page listing it (no CDN: servers are often offline)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from gateway.server.rest_common import JSON, Route

__all__ = ["document", "page"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_PARAMETER = re.compile(r"{(\w+)}")

_TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "example": "FP32"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "V1Request": {
        "type": "object",
        "description": "Passed to the model as is; KServe models expect "
        '{"instances": [...]}. Also accepted as a CloudEvent (binary or structured mode).',
    },
    "InferenceRequest": {
        "type": "object",
        "description": "With the binary tensor extension, the JSON is followed by tensor "
        "bytes and the Inference-Header-Content-Length header gives the JSON's length.",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RepositoryIndexRequest": {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}},
    },
    "Tensor": _TENSOR,
}

# The media types each request body may come as.
_MEDIA_TYPES = {
    "V1Request": (JSON, "application/cloudevents+json"),
    "InferenceRequest": (JSON, "application/octet-stream"),
    "RepositoryIndexRequest": (JSON,),
}


def document(routes: Iterable[Route], title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3 document of `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


def _operation(route: Route) -> dict[str, Any]:
    slug = re.sub(r"\W+", "_", route.path).strip("_") or "root"
    operation: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{slug}",
        "summary": route.summary,
        "tags": [route.protocol or "server"],
        "responses": {
            "200": {"description": "OK"},
            "default": {"description": "Error", "content": {JSON: {"schema": _ERROR}}},
        },
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAMETER.findall(route.path)
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        schema = {"$ref": f"#/components/schemas/{route.body}"}
        operation["requestBody"] = {
            "required": route.body != "RepositoryIndexRequest",
            "content": {media: {"schema": schema} for media in _MEDIA_TYPES[route.body]},
        }
    return operation


def page(doc: dict[str, Any]) -> str:
    """An HTML page listing the document's endpoints."""
    rows = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            rows.append(
                f"<tr><td>{html.escape(operation['tags'][0])}</td>"
                f"<td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation['summary'])}</td></tr>"
            )
    title = html.escape(f"{doc['info']['title']} {doc['info']['version']}")
    return _PAGE.format(title=title, rows="\n".join(rows))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .8rem; text-align: left; }}
.m {{ font-weight: bold; }}
</style></head>
<body><h1>{title}</h1>
<p>The OpenAPI document: <a href="/openapi.json">/openapi.json</a></p>
<table><tr><th>Group</th><th>Method</th><th>Path</th><th>What</th></tr>
{rows}
</table></body></html>
"""
