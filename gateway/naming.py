"""The name a server goes by when ``OTEL_SERVICE_NAME`` does not give one: its models' names
and what it does for them (``iris-transformer``, ``iris-proxy``, ``iris-predictor``), so that
the gateways of a chain are told apart in a merged trace and in ``Server-Timing``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.model import BaseKServeModel, Model
from gateway.tracing import DEFAULT_SERVICE_NAME

__all__ = ["role", "service_name"]


def role(model: BaseKServeModel) -> str:
    """What a model does: ``predictor`` (answers itself), ``explainer``, ``transformer``
    (changes what passes through) or ``proxy`` (forwards requests as they are)."""
    if not isinstance(model, Model):
        return "predictor"
    cls = type(model)
    if cls.predict is not Model.predict:
        return "predictor"
    if cls.explain is not Model.explain:
        return "explainer"
    if cls.preprocess is not Model.preprocess or cls.postprocess is not Model.postprocess:
        return "transformer"
    return "proxy"


def service_name(models: Mapping[str, BaseKServeModel], environ: Mapping[str, str]) -> str:
    """``OTEL_SERVICE_NAME``, else the models' names and roles (``iris-transformer``)."""
    given = environ.get("OTEL_SERVICE_NAME", "").strip()
    if given:
        return given
    if not models:
        return DEFAULT_SERVICE_NAME
    roles = _unique(role(model) for model in models.values())
    return f"{'+'.join(models)}-{'+'.join(roles)}"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
