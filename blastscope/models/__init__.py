"""The model zoo: ``create_model(name, ...)`` builds any registered network with its preprocessing and weights.

Modules, each importing only those above it:

- :mod:`~blastscope.models.base`: :class:`CellClassifier`, the interface of every network.
- :mod:`~blastscope.models.backbones`: timm helpers (backbone without its top, preprocessing, checkpoint keys, stages).
- :mod:`~blastscope.models.registry`: the pure registry (:func:`register_model`, :func:`get_spec`, :func:`list_models`).
- :mod:`~blastscope.models.measurements`: the cell's size and colour measured by tensor operations.
- :mod:`~blastscope.models.cnn`, :mod:`~blastscope.models.timm_classifiers`, :mod:`~blastscope.models.attention`,
  :mod:`~blastscope.models.measured`: the architectures, registered on import.
- :mod:`~blastscope.models.weights`: where a model's starting weights come from.
- :mod:`~blastscope.models.factory`: :func:`create_model`, :class:`ModelBundle`, :func:`parameter_count`,
  :func:`model_display_name`.
"""

# Importing registers the models, in the order `blastscope models` lists them and `compare` trains them.
from blastscope.models import cnn, timm_classifiers, attention, measured  # noqa: F401, I001
from blastscope.models.base import CellClassifier
from blastscope.models.factory import ModelBundle, create_model, model_display_name, parameter_count
from blastscope.models.registry import ModelSpec, TrainingDefaults, get_spec, list_models, register_model

__all__ = [
    "CellClassifier",
    "ModelBundle",
    "ModelSpec",
    "TrainingDefaults",
    "create_model",
    "get_spec",
    "list_models",
    "model_display_name",
    "parameter_count",
    "register_model",
]
