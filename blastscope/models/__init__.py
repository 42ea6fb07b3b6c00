"""The model zoo: ``create_model(name, ...)`` builds any registered network with its preprocessing and weights."""

from blastscope.models import attention, cnn, timm_backbone  # noqa: F401 - importing registers the models
from blastscope.models.base import CellClassifier, Preprocessing
from blastscope.models.registry import (
    ModelBundle,
    ModelSpec,
    TrainingDefaults,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = [
    "CellClassifier",
    "ModelBundle",
    "ModelSpec",
    "Preprocessing",
    "TrainingDefaults",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
