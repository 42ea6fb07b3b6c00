"""EfficientNet-B0 with a self-attention head: every position of the final feature map can weigh every other.

Blast vs normal-cell cues (nuclear chromatin texture, nucleoli, the nucleus-to-cytoplasm ratio) are spread over the
cell, so the head lets the positions of the feature map attend to one another before pooling instead of only
averaging them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn

from blastscope.models.backbones import backbone_stages
from blastscope.models.base import CellClassifier
from blastscope.models.registry import TrainingDefaults
from blastscope.models.timm_classifiers import EFFICIENTNET_GRADCAM_LAYERS, register_timm_model


def _dense_block(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, out_features, bias=False),
        nn.BatchNorm1d(out_features),
        nn.LeakyReLU(0.1),
        nn.Dropout(dropout),
    )


class AttentionHead(nn.Module):
    """Feature map -> tokens (+ learned positions) -> multi-head self-attention with residual and LayerNorm -> mean
    over tokens -> dense layers (batch norm, LeakyReLU, dropout) -> linear classifier.

    Training it needs batches of two or more: its batch-norm layers cannot estimate statistics from one sample.
    """

    def __init__(
        self,
        channels: int,
        grid: int,
        num_classes: int,
        num_heads: int = 8,
        positional: Literal["learned", "none"] = "learned",
        hidden: tuple[int, ...] = (256, 64),
        dropout: float = 0.3,
        attention_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, channels)) if positional == "learned" else None
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        self.attention = nn.MultiheadAttention(channels, num_heads, dropout=attention_dropout, batch_first=True)
        self.norm = nn.LayerNorm(channels)
        widths = (channels, *hidden)
        self.dense = nn.Sequential(*(_dense_block(widths[i], widths[i + 1], dropout) for i in range(len(hidden))))
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        height, width = feature_map.shape[-2:]
        tokens = feature_map.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            tokens = tokens + self._positions(height, width)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        tokens = self.norm(tokens + attended)
        return self.classifier(self.dense(tokens.mean(dim=1)))

    def _positions(self, height: int, width: int) -> torch.Tensor:
        """The learned embedding, resampled when images arrive at another size than the model was built for."""
        if (height, width) == (self.grid, self.grid):
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed, new_size=[height, width], old_size=[self.grid, self.grid], num_prefix_tokens=0
        )


class EfficientNetAttention(CellClassifier):
    """EfficientNet-B0 backbone whose final spatial feature map (after conv_head/bn2) feeds an :class:`AttentionHead`.

    ``forward_features`` returns the map itself, ``(batch, backbone.num_features, h, w)``, not a pooled vector: the
    head attends over its positions.

    Parameters
    ----------
    backbone : nn.Module
        A timm EfficientNet backbone from :func:`~blastscope.models.backbones.create_backbone`.
    num_classes : int
        Output logits.
    image_size : int
        Side of the square input in pixels the model is built for; sets the grid of the learned positions
        (``ceil(image_size / 32)`` for EfficientNet-B0). Other sizes still work: the positions are resampled.
    positional : {"learned", "none"}
        Whether the tokens get a learned position embedding.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        image_size: int,
        positional: Literal["learned", "none"] = "learned",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        grid = math.ceil(image_size / backbone.feature_info[-1]["reduction"])
        self.head = AttentionHead(backbone.num_features, grid, num_classes, positional=positional)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(images)

    def stages(self) -> list[nn.Module]:
        return backbone_stages(self.backbone)

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.bn2

    def gradcam_layers(self) -> list[tuple[str, nn.Module]]:
        return [(name, self.backbone.get_submodule(name)) for name in EFFICIENTNET_GRADCAM_LAYERS]


@register_timm_model(
    "efficientnet_b0_attention",
    timm_name="efficientnet_b0",
    cpu_bf16_training=False,
    description="EfficientNet-B0 feature map -> multi-head self-attention -> dense layers (BN, LeakyReLU, dropout)",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_b0_attention(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return EfficientNetAttention(backbone, num_classes, image_size)
