"""A KServe ``InferenceGraph`` as frozen values: nodes, their steps, the router timeouts.

The fields and their meaning are KServe's (``serving.kserve.io/v1alpha1``); `load` builds these
values from a resource and refuses what KServe's router would run wrongly or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from gateway.graph.conditions import Condition
from gateway.graph.targets import StepTarget

__all__ = [
    "Dependency",
    "GraphSpec",
    "GraphSpecError",
    "Node",
    "RouterTimeouts",
    "RouterType",
    "Step",
]

ROOT = "root"
REQUEST = "$request"
RESPONSE = "$response"


class GraphSpecError(ValueError):
    """An inference graph that cannot be served; the message names the node and the step."""


class RouterType(str, Enum):
    SEQUENCE = "Sequence"
    SWITCH = "Switch"
    ENSEMBLE = "Ensemble"
    SPLITTER = "Splitter"


class Dependency(str, Enum):
    # A failed Soft step does not stop a Sequence; a failed Hard step decides the node's answer.
    SOFT = "Soft"
    HARD = "Hard"


@dataclass(frozen=True)
class Step:
    """One step of a node: a service (by name or URL) or another node, and how to call it."""

    node: str
    index: int
    name: str | None = None
    service_name: str | None = None
    service_url: str | None = None
    node_name: str | None = None
    # "$request" (the node's input) or "$response" (the previous step's answer, in a Sequence).
    data: str = REQUEST
    weight: int | None = None
    condition: Condition | None = None
    dependency: Dependency = Dependency.SOFT
    # Where a service step goes; None for a node step, or a service name left unresolved.
    target: StepTarget | None = None

    @property
    def key(self) -> str:
        """The step's key in an Ensemble's answer: its name, else its index (as KServe)."""
        return self.name if self.name else str(self.index)

    @property
    def service(self) -> str | None:
        """What the step calls, as the graph names it: the service name, else its URL."""
        return self.service_name or self.service_url

    @property
    def hard(self) -> bool:
        return self.dependency is Dependency.HARD

    def where(self) -> str:
        """``node 'root' steps[1] ('classify')``, for messages."""
        name = f" ({self.name!r})" if self.name else ""
        return f"node {self.node!r} steps[{self.index}]{name}"


@dataclass(frozen=True)
class Node:
    name: str
    router_type: RouterType
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class RouterTimeouts:
    """KServe's ``spec.routerTimeouts``, in seconds; None where the graph sets none.

    ``server_read`` / ``server_write`` / ``server_idle`` bound the router's own HTTP server;
    ``service_client`` caps each call to a service (within the request's one deadline).
    """

    server_read: float | None = None
    server_write: float | None = None
    server_idle: float | None = None
    service_client: float | None = None


@dataclass(frozen=True)
class GraphSpec:
    """A whole graph: its name (the model name it is served under), nodes and timeouts."""

    name: str
    nodes: Mapping[str, Node]
    router_timeouts: RouterTimeouts = field(default_factory=RouterTimeouts)

    @property
    def root(self) -> Node:
        return self.nodes[ROOT]

    def steps(self) -> list[Step]:
        return [step for node in self.nodes.values() for step in node.steps]

    def targets(self) -> dict[str, StepTarget | None]:
        """Each service the graph calls (by `Step.service`) and where it is, when resolved."""
        found: dict[str, StepTarget | None] = {}
        for step in self.steps():
            if step.service is not None:
                found[step.service] = found.get(step.service) or step.target
        return found
