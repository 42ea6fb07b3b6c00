"""The model zoo: ``create_model(name, ...)`` builds any registered network with its preprocessing and weights."""

# Importing registers the models, in the order `blastscope models` lists them and `compare` trains them.
from blastscope.models import cnn, timm_backbone, attention  # noqa: F401, I001
from blastscope.models.base import CellClassifier
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
    "TrainingDefaults",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
