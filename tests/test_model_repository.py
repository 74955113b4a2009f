"""`ModelRepository` (gateway.model_repository): models by name, loaded and unloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ModelNotFound
from gateway.model_repository import ModelRepository
from tests.models import EchoModel


async def test_models_by_name_and_readiness(tmp_path: Path) -> None:
    repository = ModelRepository(str(tmp_path))
    echo = EchoModel("echo")
    repository.update(echo)
    repository.update(echo, "alias")
    assert set(repository.get_models()) == {"echo", "alias"}
    assert repository.get_model("alias") is echo
    assert await repository.is_model_ready("echo") is echo.ready
    assert await repository.is_model_ready("nope") is False


async def test_unloaded_models_stay_listed_and_load_again(tmp_path: Path) -> None:
    repository = ModelRepository(str(tmp_path))
    echo = EchoModel("echo")
    repository.update(echo)
    repository.unload("echo")
    assert echo.ready is False
    assert await repository.is_model_ready("echo") is False
    assert repository.load("echo") is True
    assert await repository.is_model_ready("echo") is True
    with pytest.raises(ModelNotFound):
        repository.unload("nope")
    with pytest.raises(ModelNotFound):
        repository.load("nope")


def test_models_with_a_directory_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "echo").mkdir()
    repository = ModelRepository(str(tmp_path))
    echo, other = EchoModel("echo"), EchoModel("other")
    echo.ready = other.ready = False
    repository.update(echo)
    repository.update(other)
    repository.load_models()
    assert (echo.ready, other.ready) == (True, False)
    ModelRepository(str(tmp_path / "missing")).load_models()  # no directory: nothing to do
