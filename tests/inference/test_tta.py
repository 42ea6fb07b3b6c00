"""The 8 TTA views are exactly the dihedral group of the square."""

from __future__ import annotations

import torch
from torch import nn

from blastscope.inference.tta import VIEW_NAMES, dihedral_views, view_logits


def test_eight_distinct_views_of_an_asymmetric_image() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = dihedral_views(image)
    assert len(views) == len(VIEW_NAMES) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], image)
    assert torch.equal(views[2], image.flip(-1).flip(-2))  # rot180
    assert torch.equal(views[4], image.flip(-1))
    for view in views:  # closed under the group: flipping or rotating any view gives another view
        assert any(torch.equal(view.flip(-1), other) for other in views)
        assert any(torch.equal(torch.rot90(view, 1, (-2, -1)), other) for other in views)


def test_view_logits_shape_and_invariant_model() -> None:
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))  # blind to orientation
    images = torch.randn(5, 3, 8, 8)
    logits = view_logits(model, images, tta=True)
    assert logits.shape == (5, 8, 2)
    torch.testing.assert_close(logits, logits[:, :1].expand_as(logits))
    assert view_logits(model, images, tta=False).shape == (5, 1, 2)
