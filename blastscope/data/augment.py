"""The augmentation and preprocessing switches of a training recipe, without importing PyTorch.

``AugmentConfig`` is what ``config.yaml`` records under ``augmentation`` and what ``blastscope.data.transforms``
builds its transforms from; the command line reads and checks it before any heavy library loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from blastscope.errors import BlastscopeError

StainMethod = Literal["macenko", "reinhard"]
STAIN_METHODS: tuple[str, ...] = ("macenko", "reinhard")
DENOISERS: tuple[str, ...] = ("median", "bilateral", "nl_means")
SWITCHES: tuple[str, ...] = ("rotation", "shift", "shear", "zoom", "hflip", "vflip", "color_jitter", "hed_jitter")
STRENGTHS: tuple[str, ...] = (
    "rotation_degrees",
    "shift_fraction",
    "shear_degrees",
    "brightness",
    "saturation",
    "hue",
    "hed_strength",
)


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Switches and strengths of training augmentation, plus the stain/denoise preprocessing.

    Geometric defaults assume single cells centred on black: any rotation and both flips are label-preserving (a
    cell has no orientation), and shifts, shears and zooms stay small so the cell stays in frame.
    """

    rotation: bool = True
    shift: bool = True
    shear: bool = True
    zoom: bool = True
    hflip: bool = True
    vflip: bool = True
    color_jitter: bool = True
    hed_jitter: bool = False
    stain_norm: str | None = None
    stain_reference: str | None = None
    denoise: str | None = None
    rotation_degrees: float = 180.0
    shift_fraction: float = 0.1
    shear_degrees: float = 10.0
    zoom_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.15
    saturation: float = 0.15
    hue: float = 0.03
    hed_strength: float = 0.04

    def __post_init__(self) -> None:
        # `--augment rotation=maybe` reads as a string, which is truthy, and a negative strength fails deep in training
        for name in SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise BlastscopeError(
                    f"{name}={getattr(self, name)!r} is not a switch: write {name}=true or {name}=false"
                )
        for name in STRENGTHS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise BlastscopeError(f"{name}={value!r} is invalid: give a number, 0 or more")
        object.__setattr__(self, "zoom_range", tuple(float(v) for v in self.zoom_range))
        if self.stain_norm is not None and self.stain_norm not in STAIN_METHODS:
            raise BlastscopeError(f"unknown stain_norm {self.stain_norm!r}; use one of {', '.join(STAIN_METHODS)}")
        if self.denoise is not None and self.denoise not in DENOISERS:
            raise BlastscopeError(f"unknown denoise {self.denoise!r}; use one of {', '.join(DENOISERS)}")
        if self.stain_reference is not None and self.stain_norm is None:
            raise BlastscopeError("stain_reference is set but stain_norm is not; set stain_norm to macenko or reinhard")
        if len(self.zoom_range) != 2 or not 0 < self.zoom_range[0] <= self.zoom_range[1]:
            raise BlastscopeError(f"zoom_range {self.zoom_range} must be two positive factors, low <= high")
        if not 0 <= self.shift_fraction < 0.5 or not 0 <= self.hue <= 0.5:
            raise BlastscopeError("shift_fraction must lie in [0, 0.5) and hue in [0, 0.5]")

    @classmethod
    def off(cls, **preprocessing: Any) -> AugmentConfig:
        """No random augmentation at all; keyword arguments may still switch on stain normalisation or denoising."""
        return cls(**{name: False for name in SWITCHES}, **preprocessing)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for config.yaml; ``AugmentConfig(**config.to_dict())`` rebuilds it."""
        data = asdict(self)
        data["zoom_range"] = list(self.zoom_range)
        return data


def augment_config(settings: dict[str, Any]) -> AugmentConfig:
    """The AugmentConfig of a config.yaml mapping, refusing unknown switches in one line that lists the known ones."""
    known = [field.name for field in fields(AugmentConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise BlastscopeError(
            f"augmentation settings {sorted(settings)}: unknown {', '.join(unknown)}; use {', '.join(known)}"
        )
    try:
        return AugmentConfig(**settings)
    except TypeError as error:
        raise BlastscopeError(f"augmentation settings {sorted(settings)}: {error}") from error
