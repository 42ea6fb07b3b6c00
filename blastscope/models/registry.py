"""The model zoo's registry: every network blastscope can train, by name, with its preprocessing and defaults.

Like timm's ``_registry``, this module only records: an architecture module registers a builder under a name with
:func:`register_model`, and :func:`get_spec` / :func:`list_models` look them up. Nothing here builds a network or
resolves weights; :func:`blastscope.models.factory.create_model` does, from a :class:`ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.models.base import CellClassifier

#: ``builder(backbone, num_classes, image_size)``: the classifier around a ready timm backbone (``None`` for networks
#: without one); ``image_size`` (pixels) matters to heads whose shape depends on the feature-map grid.
Builder = Callable[[nn.Module | None, int, int], CellClassifier]


@dataclass(frozen=True, slots=True)
class TrainingDefaults:
    """What a model trains best with unless the user says otherwise.

    Attributes
    ----------
    epochs_frozen : int
        Epochs training the head on the frozen pretrained backbone (phase 1).
    epochs_finetune : int
        Epochs then training the head and the last ``unfreeze_stages`` backbone stages (phase 2).
    lr_head : float
        Learning rate of the head in phase 1.
    lr_finetune : float
        Learning rate of head and unfrozen stages in phase 2.
    unfreeze_stages : int or "all"
        How many of the backbone's stages (:meth:`CellClassifier.stages`, counted from the output) learn in phase 2;
        at most the model's stage count.
    image_size : int or None
        Input side in pixels the recipe trains at; ``None`` keeps the size the ImageNet weights were trained at
        (:attr:`ModelSpec.default_preprocessing`). A model whose best CPU recipe was measured at another size says so.

    A randomly initialised model trains everything for ``epochs_frozen + epochs_finetune`` epochs at ``lr_head``
    (there are no pretrained weights for the lower rate to protect).
    """

    epochs_frozen: int = 10
    epochs_finetune: int = 10
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    unfreeze_stages: int | Literal["all"] = 2
    image_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The defaults as a plain mapping, keyed as :class:`~blastscope.training.config.TrainConfig` fields."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One registered network: how to build it and everything known about it before it is built.

    Attributes
    ----------
    name : str
        The registered name (``--model``).
    description : str
        One line for ``blastscope models``.
    builder : Builder
        ``builder(backbone, num_classes, image_size)`` returning the :class:`CellClassifier`.
    min_input_size : int
        Smallest input side, in pixels, the network accepts.
    default_preprocessing : Preprocessing
        Input size, normalisation and interpolation the network expects: those its ImageNet weights were trained with
        (from timm's pretrained config) for a timm backbone, the network's own otherwise.
    defaults : TrainingDefaults
        The training recipe used for unset fields.
    timm_name : str or None
        The timm architecture of the backbone, whose hub entry gives the ImageNet weights; ``None`` for a network
        without a timm backbone (trained from scratch).
    package_weights : str or None
        An installed package shipping the ImageNet weights offline.
    cpu_bf16_training : bool
        Whether bf16 autocast speeds up training on CPUs with AMX: it does for plain convolutions (1.7-1.8x for cnn
        and vgg16 here) but slows the depthwise convolutions of EfficientNets (0.55-0.65x), which then train in fp32.
    """

    name: str
    description: str
    builder: Builder
    min_input_size: int
    default_preprocessing: Preprocessing
    defaults: TrainingDefaults = field(default_factory=TrainingDefaults)
    timm_name: str | None = None
    package_weights: str | None = None
    cpu_bf16_training: bool = True

    def preprocessing(self, image_size: int | None = None) -> Preprocessing:
        """The network's own normalisation and interpolation, at ``image_size`` when given.

        Parameters
        ----------
        image_size : int, optional
            Side of the square input in pixels; the default is the one the weights were trained at.

        Returns
        -------
        Preprocessing
            :attr:`default_preprocessing` with ``input_size`` replaced.

        Raises
        ------
        BlastscopeError
            If ``image_size`` is below :attr:`min_input_size`.
        """
        base = self.default_preprocessing
        size = base.input_size if image_size is None else int(image_size)
        if size < self.min_input_size:
            raise BlastscopeError(
                f"image size {size} px is too small for {self.name}: it needs at least {self.min_input_size} px; "
                f"pass --image-size {self.min_input_size} or more"
            )
        return Preprocessing(input_size=size, mean=base.mean, std=base.std, interpolation=base.interpolation)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    description: str,
    min_input_size: int,
    preprocessing: Preprocessing,
    defaults: TrainingDefaults | None = None,
    timm_name: str | None = None,
    package_weights: str | None = None,
    cpu_bf16_training: bool = True,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``; the keywords become the :class:`ModelSpec`'s attributes.

    Parameters
    ----------
    preprocessing : Preprocessing
        Becomes :attr:`ModelSpec.default_preprocessing`.
    defaults : TrainingDefaults, optional
        ``TrainingDefaults()`` when not given.

    Returns
    -------
    callable
        The decorator; it returns the builder unchanged.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            description=description,
            builder=builder,
            min_input_size=min_input_size,
            default_preprocessing=preprocessing,
            defaults=defaults or TrainingDefaults(),
            timm_name=timm_name,
            package_weights=package_weights,
            cpu_bf16_training=cpu_bf16_training,
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, in registration order (the order of the comparison tables)."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` of ``name``.

    Raises
    ------
    BlastscopeError
        If no model is registered under ``name``; the message lists the registered ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BlastscopeError(
            f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)} (`blastscope models` lists them)"
        ) from None
