"""Building registered models: the network with its weights and preprocessing, and what a run records about it.

The registry (:mod:`blastscope.models.registry`) says what a model is; this module makes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from blastscope.data.preprocessing import Preprocessing
from blastscope.models.backbones import create_backbone
from blastscope.models.base import CellClassifier
from blastscope.models.registry import ModelSpec, get_spec
from blastscope.models.weights import build_backbone, load_classifier_checkpoint, parse_pretrained


def model_display_name(name: str, pretrained: bool) -> str:
    """How reports and tables name a model: results of random and pretrained runs must never be confused.

    Parameters
    ----------
    name : str
        The registered model name.
    pretrained : bool
        Whether the network started from pretrained weights.

    Returns
    -------
    str
        E.g. ``"resnet50 (pretrained)"`` or ``"resnet50 (random init)"``.
    """
    return f"{name} ({'pretrained' if pretrained else 'random init'})"


@dataclass(slots=True)
class ModelBundle:
    """A built network plus what a run must record about it.

    Attributes
    ----------
    name : str
        The registered model name.
    model : CellClassifier
        The network, in eval mode, with every parameter trainable.
    preprocessing : Preprocessing
        The input size and normalisation it must be fed with.
    pretrained : bool
        Whether it got pretrained weights (ImageNet or a file); ``False`` for random initialisation.
    weights_source : str
        Where the weights came from, in words, e.g. ``"ImageNet (hub cache, timm/resnet50.a1_in1k)"``.
    spec : ModelSpec
        The registry entry it was built from.
    weights_sha256 : str or None
        The SHA-256 of the weights file it started from; ``None`` for weights not from a file.
    """

    name: str
    model: CellClassifier
    preprocessing: Preprocessing
    pretrained: bool
    weights_source: str
    spec: ModelSpec
    weights_sha256: str | None = None

    @property
    def display_name(self) -> str:
        """E.g. ``"resnet50 (random init)"``: see :func:`model_display_name`."""
        return model_display_name(self.name, self.pretrained)


def create_model(
    name: str,
    num_classes: int = 2,
    pretrained: str | Path | bool = "auto",
    image_size: int | None = None,
) -> ModelBundle:
    """Build the registered model ``name`` with the weights ``pretrained`` asks for.

    Parameters
    ----------
    name : str
        A registered model (:func:`~blastscope.models.registry.list_models`).
    num_classes : int
        Logits the head outputs.
    pretrained : {"auto", "hub", "none"}, path or bool
        ``auto`` takes the best weights obtainable without failing (an installed package, the hub cache, the hub)
        and falls back to random initialisation with a warning; ``hub`` insists on ImageNet weights; ``none`` (or
        ``False``) is random initialisation; any other value is the path of a weights file: a backbone's state dict
        or a whole blastscope classifier's checkpoint. ``True`` means ``hub``.
    image_size : int, optional
        Side of the square input in pixels; the default is the size the model's weights were trained at.

    Returns
    -------
    ModelBundle
        The network in eval mode, with its preprocessing and the record of its weights.

    Raises
    ------
    BlastscopeError
        If ``name`` is not registered or ``image_size`` is below the model's minimum.
    WeightsError
        If ``hub`` weights cannot be had, or a weights file is unreadable or does not fit the network.
    """
    spec = get_spec(name)
    preprocessing = spec.preprocessing(image_size)
    backbone, weights = build_backbone(spec, parse_pretrained(pretrained))
    model = spec.builder(backbone, num_classes, preprocessing.input_size)
    if weights.classifier_state is not None:
        load_classifier_checkpoint(model, weights.classifier_state, weights.source)
    model.eval()
    return ModelBundle(
        name=name,
        model=model,
        preprocessing=preprocessing,
        pretrained=weights.pretrained,
        weights_source=weights.source,
        spec=spec,
        weights_sha256=weights.sha256,
    )


def parameter_count(name: str, num_classes: int = 2, image_size: int | None = None) -> int:
    """Parameters of the built model ``name``, counted on the meta device: no memory, no weights, no network.

    Parameters
    ----------
    name : str
        A registered model.
    num_classes : int
        Logits of the head.
    image_size : int, optional
        Side of the input in pixels (heads such as the cnn's dense layer grow with it); default as in
        :func:`create_model`.

    Returns
    -------
    int
        Number of scalar parameters, trainable or not.

    Raises
    ------
    BlastscopeError
        As :func:`create_model`, for an unknown name or a too small ``image_size``.
    """
    spec = get_spec(name)
    size = spec.preprocessing(image_size).input_size
    with torch.device("meta"):
        backbone = create_backbone(spec.timm_name) if spec.timm_name is not None else None
        model = spec.builder(backbone, num_classes, size)
    return sum(parameter.numel() for parameter in model.parameters())
