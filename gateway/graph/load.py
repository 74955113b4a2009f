"""Read a KServe ``InferenceGraph`` (YAML or JSON) into a `GraphSpec`, refusing what cannot run.

Accepted: the resource as written for KServe (``apiVersion: serving.kserve.io/v1alpha1``,
``kind: InferenceGraph``, ``metadata.name``, ``spec``), or the bare ``spec`` (what KServe's
router takes as ``--graph-json``) with a name given. Every refusal is a one-line
`GraphSpecError` naming the node and the step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.graph import validate
from gateway.graph.conditions import Condition
from gateway.graph.spec import (
    REQUEST,
    RESPONSE,
    Dependency,
    GraphSpec,
    GraphSpecError,
    Node,
    RouterTimeouts,
    RouterType,
    Step,
)
from gateway.graph.targets import StepTarget, parse_service_url, resolve_service

__all__ = ["load_graph", "parse_graph"]

API_VERSION = "serving.kserve.io/v1alpha1"
KIND = "InferenceGraph"
# KServe's webhook: a graph's name is a DNS label starting with a letter.
NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
STEP_FIELDS = frozenset(
    {"name", "serviceName", "serviceUrl", "nodeName", "data", "weight", "condition", "dependency"}
)
NODE_FIELDS = frozenset({"routerType", "steps"})
TIMEOUTS = {"serverRead": "server_read", "serverWrite": "server_write",
            "serverIdle": "server_idle", "serviceClient": "service_client"}  # fmt: skip


def load_graph(
    source: str | Path,
    *,
    services: Mapping[str, str] | None = None,
    name: str | None = None,
    default_name: str | None = None,
) -> GraphSpec:
    """The graph in the file `source` (YAML, or JSON, which is YAML too).

    `services` maps a ``serviceName`` to its URL; given, every service name must be in it.
    `name` names a bare spec (and overrides a resource's ``metadata.name``); `default_name`
    names a graph that names itself nowhere."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphSpecError(f"cannot read graph {str(path)!r}: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise GraphSpecError(f"graph {str(path)!r} is not YAML or JSON: {detail}") from None
    return parse_graph(document, services=services, name=name, default_name=default_name)


def parse_graph(
    document: Any,
    *,
    services: Mapping[str, str] | None = None,
    name: str | None = None,
    default_name: str | None = None,
) -> GraphSpec:
    """The graph in a parsed resource (or bare spec); see `load_graph`."""
    if not isinstance(document, Mapping):
        raise GraphSpecError("a graph must be an InferenceGraph resource (a mapping)")
    if "spec" in document or "kind" in document or "apiVersion" in document:
        spec, resource_name = _resource(document)
        name = name or resource_name
    else:
        spec = document
    name = name or default_name
    if not name:
        raise GraphSpecError("the graph needs a name (metadata.name)")
    if not NAME.fullmatch(name):
        raise GraphSpecError(
            f"graph name {name!r} must be lower-case letters, digits and '-', starting with a "
            "letter (as KServe requires)"
        )
    nodes = spec.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise GraphSpecError(f"graph {name!r}: spec.nodes must map node names to nodes")
    built = {str(key): _node(str(key), value, services) for key, value in nodes.items()}
    graph = GraphSpec(name, MappingProxyType(built), _timeouts(spec.get("routerTimeouts")))
    validate.check(graph)
    return graph


def _resource(document: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise GraphSpecError(
            f"expected apiVersion {API_VERSION!r} and kind {KIND!r}, got "
            f"{document.get('apiVersion')!r} and {document.get('kind')!r}"
        )
    metadata = document.get("metadata") or {}
    spec = document.get("spec")
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        raise GraphSpecError("an InferenceGraph needs metadata and spec mappings")
    name = metadata.get("name")
    return spec, name if isinstance(name, str) else None


def _node(name: str, value: Any, services: Mapping[str, str] | None) -> Node:
    if not isinstance(value, Mapping):
        raise GraphSpecError(f"node {name!r} must be a mapping with routerType and steps")
    unknown = sorted(set(value) - NODE_FIELDS)
    if unknown:
        raise GraphSpecError(f"node {name!r}: unknown field {unknown[0]!r}")
    try:
        router = RouterType(value.get("routerType"))
    except ValueError:
        choices = ", ".join(kind.value for kind in RouterType)
        raise GraphSpecError(
            f"node {name!r}: routerType must be one of {choices}, not {value.get('routerType')!r}"
        ) from None
    steps = value.get("steps")
    if not isinstance(steps, list) or not steps:
        raise GraphSpecError(f"node {name!r} needs a list of steps")
    return Node(name, router, tuple(_step(name, i, s, services) for i, s in enumerate(steps)))


def _step(node: str, index: int, value: Any, services: Mapping[str, str] | None) -> Step:
    where = f"node {node!r} steps[{index}]"
    if not isinstance(value, Mapping):
        raise GraphSpecError(f"{where} must be a mapping")
    name = _text(value, "name", where)
    if name:
        where += f" ({name!r})"
    unknown = sorted(set(value) - STEP_FIELDS)
    if unknown:
        raise GraphSpecError(f"{where}: unknown field {unknown[0]!r}")
    service_name = _text(value, "serviceName", where)
    service_url = _text(value, "serviceUrl", where)
    node_name = _text(value, "nodeName", where)
    given = [key for key, v in (("serviceName", service_name), ("serviceUrl", service_url),
                                ("nodeName", node_name)) if v]  # fmt: skip
    if not given:
        raise GraphSpecError(f"{where} names no target: give serviceName, serviceUrl or nodeName")
    if len(given) > 1:
        raise GraphSpecError(f"{where} gives {' and '.join(given)}: a step has one target")
    data = _text(value, "data", where) or REQUEST
    if data not in (REQUEST, RESPONSE):
        raise GraphSpecError(f"{where}: data must be {REQUEST} or {RESPONSE}, not {data!r}")
    dependency = _text(value, "dependency", where) or Dependency.SOFT.value
    if dependency not in (Dependency.SOFT.value, Dependency.HARD.value):
        raise GraphSpecError(f"{where}: dependency must be Soft or Hard, not {dependency!r}")
    return Step(
        node=node,
        index=index,
        name=name,
        service_name=service_name,
        service_url=service_url,
        node_name=node_name,
        data=data,
        weight=_weight(value.get("weight"), where),
        condition=_condition(value, where),
        dependency=Dependency(dependency),
        target=_target(service_name, service_url, services, where),
    )


def _text(value: Mapping[str, Any], key: str, where: str) -> str | None:
    text = value.get(key)
    if text is not None and not isinstance(text, str):
        raise GraphSpecError(f"{where}: {key} must be a string, not {text!r}")
    return text or None


def _weight(weight: Any, where: str) -> int | None:
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise GraphSpecError(
            f"{where}: weight must be a whole number from 0 to 100, not {weight!r}"
        )
    return weight


def _condition(value: Mapping[str, Any], where: str) -> Condition | None:
    text = _text(value, "condition", where)
    if text is None:
        return None
    try:
        return Condition.parse(text)
    except ValueError as exc:
        raise GraphSpecError(f"{where}: {exc}") from None


def _target(
    service_name: str | None,
    service_url: str | None,
    services: Mapping[str, str] | None,
    where: str,
) -> StepTarget | None:
    try:
        if service_url:
            return parse_service_url(service_url)
        if service_name and services is not None:
            return resolve_service(service_name, services)
    except ValueError as exc:
        raise GraphSpecError(f"{where}: {exc}") from None
    return None


def _timeouts(value: Any) -> RouterTimeouts:
    if value is None:
        return RouterTimeouts()
    if not isinstance(value, Mapping):
        raise GraphSpecError("spec.routerTimeouts must be a mapping")
    seconds: dict[str, float] = {}
    for key, field_name in TIMEOUTS.items():
        given = value.get(key)
        if given is None:
            continue
        if isinstance(given, bool) or not isinstance(given, int | float) or given <= 0:
            raise GraphSpecError(f"spec.routerTimeouts.{key} must be a number of seconds above 0")
        seconds[field_name] = float(given)
    unknown = sorted(set(value) - set(TIMEOUTS))
    if unknown:
        raise GraphSpecError(f"spec.routerTimeouts: unknown field {unknown[0]!r}")
    return RouterTimeouts(**seconds)
