"""Test-time augmentation over the dihedral group: a stained cell has no "up", so all 8 flips/rotations are valid."""

from __future__ import annotations

from collections.abc import Callable

import torch

VIEW_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip",
    "flip+rot90",
    "flip+rot180",
    "flip+rot270",
)


def dihedral_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The 8 views of a batch of square NCHW images, in ``VIEW_NAMES`` order (horizontal flip, then rotation)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"dihedral views need square images, got {tuple(images.shape[-2:])}")
    return [torch.rot90(base, k, dims=(-2, -1)) for base in (images, images.flip(-1)) for k in range(4)]


def view_logits(runner: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: bool) -> torch.Tensor:
    """Logits of shape (N, V, C) for a normalised NCHW batch: V = 8 dihedral views with TTA, else 1."""
    views = dihedral_views(images) if tta else [images]
    return torch.stack([runner(view) for view in views], dim=1)
