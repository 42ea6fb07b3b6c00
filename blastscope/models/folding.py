"""Batch norms folded into the convolutions before them: the same inference, fewer passes over memory.

An inference-mode batch norm is a fixed per-channel affine map, so after a convolution it can be merged into that
convolution's weights and bias (exact in real arithmetic; ``torch.nn.utils.fusion.fuse_conv_bn_eval``). Depthwise
networks such as EfficientNet spend much of their CPU time reading and writing activations, so the merge speeds them
up: frozen training stages (:mod:`blastscope.training.frozen`) and the PyTorch runner of inference both use it.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

FOLD_TOLERANCE = 1e-3  # relative; folding is exact up to float rounding, so more means the pattern was misread


@torch.no_grad()
def fold_batch_norms(module: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    """``module`` with every inference-mode batch norm that directly follows a convolution folded into it.

    Pairs are found by running ``example`` once: a batch norm whose input is the very tensor a convolution returned.
    The folded module is checked against the original on ``example``, and returned unfolded if they disagree (a
    convolution output that something else also read).
    """
    produced: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def remember(conv: nn.Module, args: tuple, output: torch.Tensor) -> None:
        produced[id(output)] = (conv, output)

    def pair(norm: nn.Module, args: tuple) -> None:
        conv, output = produced.get(id(args[0]), (None, None))
        if conv is not None and output is args[0]:
            pairs.append((conv, norm))

    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in module.modules() if type(m) in (nn.BatchNorm2d, BatchNormAct2d) and m.track_running_stats]
    hooks = [conv.register_forward_hook(remember) for conv in convs]
    hooks += [norm.register_forward_pre_hook(pair) for norm in norms]
    try:
        expected = module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    produced.clear()
    if not pairs:
        return module
    folded = copy.deepcopy(module)
    parents = {id(child): (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    twins = dict(zip(map(id, module.modules()), folded.modules(), strict=True))
    for conv, norm in pairs:
        conv_twin, norm_twin = twins[id(conv)], twins[id(norm)]
        _replace(parents, conv_twin, fuse_conv_bn_eval(conv_twin, norm_twin))
        rest = nn.Sequential(norm_twin.drop, norm_twin.act) if isinstance(norm_twin, BatchNormAct2d) else nn.Identity()
        _replace(parents, norm_twin, rest)
    error = (folded(*example) - expected).abs().max() / expected.abs().max().clamp(min=1e-12)
    return folded if error <= FOLD_TOLERANCE else module


def _replace(parents: dict[int, tuple[nn.Module, str]], old: nn.Module, new: nn.Module) -> None:
    parent, name = parents[id(old)]
    setattr(parent, name, new)
