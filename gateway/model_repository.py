"""`ModelRepository`: the models a server serves, by name, and whether each is ready."""

from __future__ import annotations

import os

from gateway.errors import ModelNotFound
from gateway.model import BaseKServeModel

MODEL_MOUNT_DIRS = "/mnt/models"


class ModelRepository:
    """Name -> model. Follows Triton's model repository extension: an unloaded model stays
    listed (as unavailable) and can be loaded again."""

    def __init__(self, models_dir: str = MODEL_MOUNT_DIRS) -> None:
        self.models: dict[str, BaseKServeModel] = {}
        self.models_dir = models_dir

    def get_model(self, name: str) -> BaseKServeModel | None:
        return self.models.get(name)

    def get_models(self) -> dict[str, BaseKServeModel]:
        return self.models

    async def is_model_ready(self, name: str) -> bool:
        model = self.get_model(name)
        return model is not None and await model.healthy()

    def update(self, model: BaseKServeModel, name: str | None = None) -> None:
        """Add or replace a model, under `name` or its own name."""
        self.models[name or model.name] = model

    def load_models(self) -> None:
        """Load every registered model whose directory exists under `models_dir`."""
        if not os.path.isdir(self.models_dir):
            return
        for name in os.listdir(self.models_dir):
            if os.path.isdir(os.path.join(self.models_dir, name)) and name in self.models:
                self.load_model(name)

    def load(self, name: str) -> bool:
        return self.load_model(name)

    def load_model(self, name: str) -> bool:
        """(Re)load a registered model; returns whether it is ready."""
        model = self.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        ready = model.load()
        return bool(ready if ready is not None else model.ready)

    def unload(self, name: str) -> None:
        """Stop a model; it stays registered, not ready, until loaded again."""
        model = self.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        model.stop()
        if model.engine:
            model.stop_engine()
        model.ready = False
