"""Runners: the one precision policy of PyTorch inference."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from blastscope.errors import BlastscopeError
from blastscope.inference.runners import TorchRunner, autocast_dtype


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(BlastscopeError, match="precision"):
        autocast_dtype("fp8", cpu)  # type: ignore[arg-type]


def test_the_torch_runner_names_its_precision_and_returns_float32_logits() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).train()
    for precision, name in (("fp32", "torch (fp32, cpu)"), ("bf16", "torch (bf16, cpu)")):
        runner = TorchRunner(model, precision)
        logits = runner(torch.randn(3, 3, 8, 8))
        assert runner.name == name and logits.shape == (3, 2) and logits.dtype == torch.float32
        assert not logits.requires_grad and not model.training


def test_the_torch_runner_folds_batch_norms_into_a_copy_and_answers_within_fp32_rounding(
    running_statistics: Callable[[nn.Module], nn.Module],
) -> None:
    model = running_statistics(
        nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
        )
    )
    images = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        expected = model(images)
    runner = TorchRunner(model)
    torch.testing.assert_close(runner(images), expected, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in runner._folded.modules())
    assert isinstance(model[1], nn.BatchNorm2d)  # the network passed in is left as it was
