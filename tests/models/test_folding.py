"""Batch norms folded into convolutions: the same output, the original untouched, refused where it would differ."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import BatchNormAct2d
from torch import nn

from blastscope.models.folding import fold_batch_norms

Seeded = Callable[[nn.Module], nn.Module]


class ReadTwice(nn.Module):
    """A convolution whose output feeds its batch norm and also the sum after it: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def test_batch_norms_after_convolutions_fold_into_them_without_changing_the_output(running_statistics: Seeded) -> None:
    block = running_statistics(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1, bias=False),
            BatchNormAct2d(4, act_layer=nn.ReLU6),
        )
    )
    images = torch.randn(2, 3, 16, 16)
    folded = fold_batch_norms(block, (images,))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.ReLU6) for m in folded.modules())  # the batch norm's own activation stays
    torch.testing.assert_close(folded(images), block(images), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules())  # the original is left as it was


def test_a_convolution_output_read_elsewhere_is_not_folded(running_statistics: Seeded) -> None:
    module = running_statistics(ReadTwice())
    assert fold_batch_norms(module, (torch.randn(1, 3, 8, 8),)) is module
