"""The interface every blastscope network implements, whatever its backbone."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from blastscope.errors import BlastscopeError


class CellClassifier(nn.Module):
    """A backbone (frozen in phase 1) followed by a head (always trained).

    ``forward_features`` returns exactly what the head consumes, so phase 1 can cache it once and train the head on
    the cached tensors.

    A batch-norm layer of the backbone whose parameters are frozen also keeps its running statistics frozen: ``train()``
    leaves it in eval mode, so a training step in phase 1 cannot shift the statistics the pretrained weights rely on.
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

    def freeze_backbone(self) -> None:
        """Phase 1: only the head learns; the backbone's weights and batch-norm statistics stay as pretrained."""
        self.backbone.requires_grad_(False)
        self.head.requires_grad_(True)
        self.train(self.training)

    def unfreeze_stages(self, count: int | Literal["all"]) -> None:
        """Phase 2: the last ``count`` backbone stages (or all) learn too, earlier ones stay frozen."""
        stages = self.stages()
        wanted = len(stages) if count == "all" else count
        if not 0 <= wanted <= len(stages):
            raise BlastscopeError(
                f"cannot unfreeze {count} stages: this model's backbone has {len(stages)}; "
                f"pass a number from 0 to {len(stages)} or 'all'"
            )
        self.freeze_backbone()
        for stage in stages[len(stages) - wanted :]:
            stage.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> CellClassifier:
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self
