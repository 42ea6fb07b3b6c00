"""Frozen stages as folded bf16 copies: same answers within bf16 rounding, never stale, and fully removable."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from blastscope.models import create_model
from blastscope.training.frozen import FAST_DTYPE, FrozenStages, fold_batch_norms


def _with_statistics(module: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding has something to get wrong."""
    generator = torch.Generator().manual_seed(0)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            size = norm.num_features
            norm.running_mean.copy_(torch.randn(size, generator=generator))
            norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.randn(size, generator=generator))
            norm.bias.data.copy_(torch.randn(size, generator=generator))
    return module.eval()


class ReadTwice(nn.Module):
    """A convolution whose output feeds its batch norm and also the sum after it: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def _lite0() -> nn.Module:
    torch.manual_seed(0)
    return _with_statistics(create_model("efficientnet_lite0", num_classes=2, pretrained="none", image_size=32).model)


def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).abs().max() / reference.abs().max())


def test_batch_norms_after_convolutions_fold_into_them_without_changing_the_output() -> None:
    block = _with_statistics(
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


def test_a_convolution_output_read_elsewhere_is_not_folded() -> None:
    module = _with_statistics(ReadTwice())
    assert fold_batch_norms(module, (torch.randn(1, 3, 8, 8),)) is module


def test_frozen_stages_answer_within_bf16_rounding_and_release_restores_the_network() -> None:
    model = _lite0()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
    stages = FrozenStages()
    stages.follow(module for stage in model.stages() for module in stage)
    with torch.no_grad():
        fast = model(images)
    assert fast.dtype == torch.float32
    assert 0 < _relative_error(fast, reference) < 0.05  # bf16 copies ran, and ran right
    copies = [built[0] for built in stages._copies.values()]
    assert copies and all(p.dtype == FAST_DTYPE for copy in copies for p in copy.parameters())
    stages.release()
    assert not any("forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(images), reference)


def test_a_frozen_copy_is_rebuilt_when_the_weights_change() -> None:
    block = _with_statistics(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()))
    images = torch.randn(2, 3, 16, 16)
    stages = FrozenStages()
    stages.follow([block])
    with torch.no_grad():
        before = block(images)
        state = block.state_dict()
        state["0.weight"] = -state["0.weight"]
        block.load_state_dict(state)  # as a checkpoint restore does
        after = block(images)
        stages.release()
        expected = block(images)
    assert _relative_error(after, expected) < 0.05
    assert _relative_error(after, before) > 0.5


def test_a_module_that_learns_or_passes_gradients_runs_its_own_forward() -> None:
    model = _lite0()
    stem = model.backbone.conv_stem
    stages = FrozenStages()
    stages.follow([stem])
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    output = stem(images)
    assert output.requires_grad and output.dtype == torch.float32
    output.sum().backward()
    assert images.grad is not None
    assert stages._copies[stem] is None  # never built: the original ran
    stages.follow([])
    assert "forward" not in stem.__dict__


@pytest.mark.parametrize("phase, unfrozen", [("frozen", 0), ("finetune", 2)])
def test_the_module_runs_exactly_the_frozen_stages_through_copies(phase: str, unfrozen: int) -> None:
    from blastscope.training.module import CellClassifierModule

    module = CellClassifierModule(
        _lite0(),
        classes=["all", "hem"],
        class_counts=[3, 2],
        pretrained=True,
        frozen_epochs=1,
        finetune_epochs=1,
        unfreeze_stages=2,
        lr_head=1e-3,
        lr_backbone=1e-4,
        weight_decay=0.0,
        bf16_frozen_stages=True,
    )
    stages = module.model.stages()
    module._follow_frozen(phase)
    expected = [m for stage in stages[: len(stages) - unfrozen] for m in stage]
    assert module.frozen_stages.modules == expected
    module.teardown("fit")
    assert not any("forward" in m.__dict__ for m in module.model.modules())
