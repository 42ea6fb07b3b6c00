"""Frozen stages as folded copies: same answers within bf16 (or fp32) rounding, never stale, and fully removable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from blastscope.models import create_model
from blastscope.training.frozen import FrozenStages


@pytest.fixture
def lite0(running_statistics: Callable[[nn.Module], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return running_statistics(create_model("efficientnet_lite0", num_classes=2, pretrained="none", image_size=32).model)


def _relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).abs().max() / reference.abs().max())


def test_frozen_stages_answer_within_bf16_rounding_and_release_restores_the_network(lite0: nn.Module) -> None:
    model = lite0
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
    assert copies and all(p.dtype == torch.bfloat16 for copy in copies for p in copy.parameters())
    stages.release()
    assert not any("forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(images), reference)


def test_fp32_copies_for_cpus_without_bf16_units_are_folded_and_answer_within_fp32_rounding(lite0: nn.Module) -> None:
    model = lite0
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
    stages = FrozenStages(torch.float32)
    stages.follow(module for stage in model.stages() for module in stage)
    with torch.no_grad():
        fast = model(images)
    copies = [built[0] for built in stages._copies.values()]
    assert copies and all(p.dtype == torch.float32 for copy in copies for p in copy.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with_convolutions = [c for c in copies if any(isinstance(m, nn.Conv2d) for m in c.modules())]
    assert not any(isinstance(m, nn.BatchNorm2d) for c in with_convolutions for m in c.modules())  # the speed
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    stages.release()


def test_a_frozen_copy_is_rebuilt_when_the_weights_change(running_statistics: Callable[[nn.Module], nn.Module]) -> None:
    block = running_statistics(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()))
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


def test_a_module_that_learns_or_passes_gradients_runs_its_own_forward(lite0: nn.Module) -> None:
    model = lite0
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
def test_the_module_runs_exactly_the_frozen_stages_through_copies(phase: str, unfrozen: int, lite0: nn.Module) -> None:
    from blastscope.training.module import CellClassifierModule

    module = CellClassifierModule(
        lite0,
        classes=["all", "hem"],
        class_counts=[3, 2],
        pretrained=True,
        frozen_epochs=1,
        finetune_epochs=1,
        unfreeze_stages=2,
        lr_head=1e-3,
        lr_backbone=1e-4,
        weight_decay=0.0,
        frozen_stage_dtype="bfloat16",
    )
    stages = module.model.stages()
    module._follow_frozen(phase)
    expected = [m for stage in stages[: len(stages) - unfrozen] for m in stage]
    assert module.frozen_stages.modules == expected
    module.teardown("fit")
    assert not any("forward" in m.__dict__ for m in module.model.modules())
