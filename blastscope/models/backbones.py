"""timm backbones: building one without its ImageNet top, its preprocessing, its checkpoint keys and its stages.

Plain helpers around timm that know nothing of the registry, so that both the architectures registering models and
the weights resolution can import them.
"""

from __future__ import annotations

from collections import defaultdict

import timm
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg, group_modules
from timm.models.vgg import VGG
from torch import nn

from blastscope.data.preprocessing import Preprocessing


def timm_preprocessing(timm_name: str) -> Preprocessing:
    """Input size, mean/std and interpolation the ImageNet weights of ``timm_name`` were trained with.

    Parameters
    ----------
    timm_name : str
        A timm architecture with a pretrained config, e.g. ``"resnet50"`` or ``"tf_efficientnet_lite0"``.

    Returns
    -------
    Preprocessing
        ``input_size`` in pixels (the side of the square input), mean/std on the [0, 1] scale.

    Raises
    ------
    ValueError
        If timm has no pretrained config for ``timm_name`` (a programming error in a registration).
    """
    pretrained_cfg = get_pretrained_cfg(timm_name)
    if pretrained_cfg is None:
        raise ValueError(f"timm has no pretrained config for {timm_name!r}")
    config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
    return Preprocessing.from_dict({**config, "input_size": config["input_size"][-1]})


def create_backbone(timm_name: str, **pretrained_kwargs: object) -> nn.Module:
    """The timm network without its classifier and pooling: ``forward_features`` gives ``(batch, C, h, w)``.

    VGG also loses its fully connected ``pre_logits`` (fc6/fc7, 120 M parameters): like Keras' ``include_top=False``,
    only the convolutional base is transferred.

    Parameters
    ----------
    timm_name : str
        The timm architecture.
    **pretrained_kwargs
        Passed to :func:`timm.create_model`, e.g. ``pretrained=True`` and ``pretrained_cfg_overlay``; without them the
        weights are randomly initialised.

    Returns
    -------
    nn.Module
        The backbone, with ``num_features`` channels in its output map.
    """
    backbone = timm.create_model(timm_name, num_classes=0, global_pool="", **pretrained_kwargs)
    if isinstance(backbone, VGG):
        backbone.pre_logits = nn.Identity()
    return backbone


def classifier_prefixes(timm_name: str) -> tuple[str, ...]:
    """Key prefixes of an ImageNet checkpoint that belong to the parts :func:`create_backbone` drops.

    Returns
    -------
    tuple of str
        E.g. ``("fc.",)`` for resnet50, ``("head.fc.", "pre_logits.")`` for vgg16.
    """
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

    Parameters
    ----------
    backbone : nn.Module
        A timm network with a ``group_matcher`` (every timm architecture has one).

    Returns
    -------
    list of nn.ModuleList
        One per coarse group, from input to output; together they hold every parameter of ``backbone`` once.
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
