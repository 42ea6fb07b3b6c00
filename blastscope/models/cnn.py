"""A small convolutional network trained from scratch: the baseline the pretrained models must beat."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.models.base import CellClassifier
from blastscope.models.registry import TrainingDefaults, register_model


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class SimpleCNN(CellClassifier):
    """Three conv + max-pool blocks, a dense layer, dropout and a linear classifier.

    The dense layer sees the flattened 1/8-resolution map (not a global pool), so the position of texture within the
    cell still counts, as in the classic Keras baseline. Its stages are the three blocks and the dense layer.

    Parameters
    ----------
    num_classes : int
        Output logits.
    image_size : int
        Side of the square input in pixels; the network only accepts this size (the dense layer's width depends on
        it).
    channels : tuple of 3 ints
        Output channels of the three conv blocks.
    hidden : int
        Width of the dense layer; ``forward_features`` returns ``(batch, hidden)``.
    dropout : float
        Dropout probability before the linear classifier.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        channels: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 128,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        grid = image_size // 8
        widths = (3, *channels)
        blocks = OrderedDict((f"block{i + 1}", _conv_block(widths[i], widths[i + 1])) for i in range(3))
        dense = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * grid * grid, hidden), nn.ReLU())
        self.backbone = nn.Sequential(OrderedDict(**blocks, dense=dense))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def stages(self) -> list[nn.Module]:
        return list(self.backbone.children())

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.block3.act

    def gradcam_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"{name}.act", getattr(self.backbone, name).act) for name in ("block3", "block2", "block1")]


@register_model(
    "cnn",
    description="3 conv + max-pool blocks, dense, dropout; trained from scratch (no pretrained weights)",
    min_input_size=8,
    preprocessing=Preprocessing(input_size=128, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    defaults=TrainingDefaults(
        epochs_frozen=0, epochs_finetune=30, lr_head=1e-3, lr_finetune=1e-3, unfreeze_stages="all"
    ),
)
def cnn(backbone: None, num_classes: int, image_size: int) -> CellClassifier:
    return SimpleCNN(num_classes, image_size)
