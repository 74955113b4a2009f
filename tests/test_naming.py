"""The service name a gateway goes by without OTEL_SERVICE_NAME (gateway.naming): its models'
names and what it does for them, so that the gateways of a chain are told apart."""

from __future__ import annotations

from typing import Any

from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.naming import role, service_name
from gateway.tracing import DEFAULT_SERVICE_NAME
from tests.models import EchoModel


class Transformer(Model):
    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return payload


class Explainer(Model):
    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return payload


def test_each_role_by_what_the_class_overrides() -> None:
    assert role(Model("m")) == "proxy"
    assert role(Transformer("m")) == "transformer"
    assert role(Explainer("m")) == "explainer"
    assert role(EchoModel("m")) == "predictor"  # a predict of its own wins


def test_the_name_is_the_models_and_their_roles_unless_the_environment_says() -> None:
    repository = ModelRepository()
    assert service_name(repository.get_models(), {}) == DEFAULT_SERVICE_NAME
    repository.update(Transformer("iris"))
    assert service_name(repository.get_models(), {}) == "iris-transformer"
    assert service_name(repository.get_models(), {"OTEL_SERVICE_NAME": " edge "}) == "edge"
    assert service_name(repository.get_models(), {"OTEL_SERVICE_NAME": " "}) == "iris-transformer"
    repository.update(Model("wine"))
    assert service_name(repository.get_models(), {}) == "iris+wine-transformer+proxy"
