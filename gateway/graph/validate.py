"""What makes a graph unservable as a whole: no root, steps that point nowhere or in a circle,
Splitter weights that do not add up, conditions that cannot be tested."""

from __future__ import annotations

from gateway.graph.spec import ROOT, GraphSpec, GraphSpecError, Node, RouterType

__all__ = ["check"]


def check(graph: GraphSpec) -> None:
    """Raise `GraphSpecError` for the first problem found in `graph`."""
    if ROOT not in graph.nodes:
        raise GraphSpecError(
            f"graph {graph.name!r} has no node named 'root', where every request starts"
        )
    for node in graph.nodes.values():
        _steps(graph, node)
        if node.router_type is RouterType.SPLITTER:
            _weights(node)
    _acyclic(graph)


def _steps(graph: GraphSpec, node: Node) -> None:
    names: set[str] = set()
    for step in node.steps:
        if step.name:
            if step.name in names:
                raise GraphSpecError(f"{step.where()}: another step of the node has that name")
            names.add(step.name)
        if step.node_name and step.node_name not in graph.nodes:
            raise GraphSpecError(f"{step.where()}: unknown node {step.node_name!r}")
        if node.router_type is RouterType.SWITCH and step.condition is None:
            raise GraphSpecError(f"{step.where()}: a Switch step needs a condition")
    first = node.steps[0]
    if node.router_type is RouterType.SEQUENCE and first.condition is not None:
        # KServe tests a Sequence step's condition on the previous step's answer: the first
        # step has none, and KServe's router fails every request.
        raise GraphSpecError(
            f"{first.where()}: the first step of a Sequence has no previous answer for its "
            "condition to test"
        )


def _weights(node: Node) -> None:
    total = 0
    for step in node.steps:
        if step.weight is None:
            raise GraphSpecError(f"{step.where()}: a Splitter step needs a weight")
        total += step.weight
    if total != 100:
        raise GraphSpecError(f"node {node.name!r}: Splitter weights add up to {total}, not 100")


def _acyclic(graph: GraphSpec) -> None:
    """Refuse a step that leads back to a node it is reached from (depth first, from each
    node, so that cycles unreachable from root are found too)."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        for step in graph.nodes[name].steps:
            target = step.node_name
            if target is None:
                continue
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise GraphSpecError(f"{step.where()}: nodeName {target!r} makes a cycle: {cycle}")
            visit(target, [*path, target])
        done.add(name)

    for name in graph.nodes:
        visit(name, [name])
