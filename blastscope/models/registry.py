"""The model zoo: every network blastscope can train, by name, with its own preprocessing and training defaults.

Like timm's registry, a module registers a builder under a name with :func:`register_model`; :func:`create_model`
resolves the pretrained weights, builds the network and returns it together with everything a run must record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.models.base import CellClassifier

#: ``builder(backbone, num_classes, image_size)``: the classifier around a ready timm backbone (``None`` for networks
#: without one); ``image_size`` matters to heads whose shape depends on the feature-map grid.
Builder = Callable[..., CellClassifier]


@dataclass(frozen=True, slots=True)
class TrainingDefaults:
    """What a model trains best with unless the user says otherwise.

    ``epochs_frozen`` trains the head on a frozen pretrained backbone; ``epochs_finetune`` then trains the last
    ``unfreeze_stages`` backbone stages at ``lr_finetune``. A randomly initialised model trains everything for the sum
    of both at ``lr_head`` (there are no pretrained weights for the lower rate to protect).
    """

    epochs_frozen: int = 10
    epochs_finetune: int = 10
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    unfreeze_stages: int | Literal["all"] = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One registered network.

    ``timm_name`` names the timm architecture of the backbone, whose pretrained config gives the preprocessing and
    whose hub entry gives the ImageNet weights; ``package_weights`` names an installed package shipping them offline.
    ``own_preprocessing`` is the preprocessing of a network without a timm backbone. ``cpu_bf16_training`` says
    whether bf16 autocast speeds up training on CPUs with AMX: it does for plain convolutions (1.7-1.8x for cnn and
    vgg16 here) but slows the depthwise convolutions of EfficientNets (0.55-0.65x), which then train in fp32.
    """

    name: str
    description: str
    builder: Builder
    min_input_size: int
    defaults: TrainingDefaults = field(default_factory=TrainingDefaults)
    timm_name: str | None = None
    package_weights: str | None = None
    own_preprocessing: Preprocessing | None = None
    cpu_bf16_training: bool = True

    def preprocessing(self, image_size: int | None = None) -> Preprocessing:
        """The backbone's own normalisation and interpolation, at ``image_size`` when given."""
        if self.own_preprocessing is not None:
            base = self.own_preprocessing
        else:
            from blastscope.models.timm_backbone import timm_preprocessing

            base = timm_preprocessing(self.timm_name)  # type: ignore[arg-type]
        size = base.input_size if image_size is None else int(image_size)
        if size < self.min_input_size:
            raise BlastscopeError(
                f"image size {size} px is too small for {self.name}: it needs at least {self.min_input_size} px; "
                f"pass --image-size {self.min_input_size} or more"
            )
        return Preprocessing(input_size=size, mean=base.mean, std=base.std, interpolation=base.interpolation)

    def parameter_count(self, num_classes: int = 2, image_size: int | None = None) -> int:
        """Parameters of the built network, counted on the meta device: no memory, no weights, no network."""
        from blastscope.models.timm_backbone import create_backbone

        size = self.preprocessing(image_size).input_size
        with torch.device("meta"):
            backbone = create_backbone(self.timm_name) if self.timm_name is not None else None
            model = self.builder(backbone, num_classes, size)
        return sum(parameter.numel() for parameter in model.parameters())


@dataclass(slots=True)
class ModelBundle:
    """A built network plus what a run must record about it."""

    name: str
    model: CellClassifier
    preprocessing: Preprocessing
    pretrained: bool
    weights_source: str
    spec: ModelSpec

    @property
    def display_name(self) -> str:
        """E.g. ``"resnet50 (random init)"``: results of random and pretrained runs must never be confused."""
        return f"{self.name} ({'pretrained' if self.pretrained else 'random init'})"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    description: str,
    min_input_size: int,
    defaults: TrainingDefaults | None = None,
    timm_name: str | None = None,
    package_weights: str | None = None,
    own_preprocessing: Preprocessing | None = None,
    cpu_bf16_training: bool = True,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            description=description,
            builder=builder,
            min_input_size=min_input_size,
            defaults=defaults or TrainingDefaults(),
            timm_name=timm_name,
            package_weights=package_weights,
            own_preprocessing=own_preprocessing,
            cpu_bf16_training=cpu_bf16_training,
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, in registration order (the order of the comparison tables)."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BlastscopeError(
            f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)} (`blastscope models` lists them)"
        ) from None


def create_model(
    name: str,
    num_classes: int = 2,
    pretrained: str | Path | bool = "auto",
    image_size: int | None = None,
) -> ModelBundle:
    """Build model ``name`` with weights from ``pretrained``: ``auto``, ``hub``, ``none`` or a file path.

    ``auto`` takes the best weights obtainable without failing (an installed package, the hub cache, the hub) and
    falls back to random initialisation with a warning; ``hub`` fails with :class:`WeightsError` instead.
    """
    from blastscope.models.weights import build_backbone, load_classifier_checkpoint, parse_pretrained

    spec = get_spec(name)
    preprocessing = spec.preprocessing(image_size)
    choice = parse_pretrained(pretrained)
    backbone, weights = build_backbone(spec, choice)
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
    )
