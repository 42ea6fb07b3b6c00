"""The interface every blastscope network implements, whatever its backbone."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How images must be prepared for one model: its own input size, normalisation and interpolation.

    Taken from the backbone's timm pretrained config so no model is fed another's normalisation.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
        )


class CellClassifier(nn.Module):
    """A backbone (frozen in phase 1) followed by a head (always trained).

    ``forward_features`` returns exactly what the head consumes, so phase 1 can cache it once and train the head on
    the cached tensors.
    """

    backbone: nn.Module
    head: nn.Module

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def stages(self) -> list[nn.Module]:
        """Backbone stages from input to output; phase 2 unfreezes the last N of them."""
        raise NotImplementedError

    def gradcam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM weighs: the backbone's last spatial feature map."""
        raise NotImplementedError
