"""The demo's inference graph, as KServe's ``InferenceGraph`` resource (the same file as
``examples/graph/graph.yaml``): a Switch on a field of the request in front of an Ensemble of
two iris classifiers. Its services are named here and placed by ``--service NAME=URL``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["GRAPH", "write"]

GRAPH = """\
# An inference graph, as KServe's InferenceGraph resource: a Switch on a field of the request
# in front of an Ensemble of two iris classifiers.
#
#   a request whose parameters say "ensemble": true -> both classifiers at once
#   any other request                                -> the logistic classifier alone
#
# Outside a cluster, `gateway serve --service NAME=URL` says where each serviceName is.
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: iris
spec:
  nodes:
    root:
      routerType: Switch
      steps:
        - name: ensemble
          nodeName: ensemble
          condition: "[@this].#(parameters.ensemble==true)"
        - name: logistic
          serviceName: logistic
          condition: "@this"
    ensemble:
      routerType: Ensemble
      steps:
        - name: logistic
          serviceName: logistic
          dependency: Hard
        - name: centroids
          serviceName: centroids
"""


def write(directory: Path) -> Path:
    """The graph as a file in `directory`, for ``gateway serve --graph``."""
    path = directory / "iris-graph.yaml"
    path.write_text(GRAPH)
    return path
