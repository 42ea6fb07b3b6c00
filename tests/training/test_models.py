"""Every registered model trains a tiny epoch; pretrained ones change only their head in phase 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from blastscope.models import create_model, list_models
from blastscope.training import TrainConfig, train
from blastscope.training.module import CellClassifierModule


def _size(name: str) -> int:
    return 75 if name == "inception_v3" else 32


def _weights_file(name: str, tmp_path: Path) -> str:
    """Counts as 'pretrained' without a download: lite0 has real ImageNet weights installed, the others a saved
    random backbone (loading one goes through the same file path as any user's weights)."""
    if name == "efficientnet_lite0":
        return "auto"
    path = tmp_path / f"{name}-backbone.pt"
    torch.save(create_model(name, pretrained="none", image_size=_size(name)).model.backbone.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_a_tiny_epoch(name: str, tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    has_backbone = create_model(name, pretrained="none", image_size=_size(name)).spec.timm_name is not None
    pretrained = _weights_file(name, tmp_path) if has_backbone else "none"
    bundle = create_model(name, pretrained=pretrained, image_size=_size(name))
    start = {key: value.clone() for key, value in bundle.model.state_dict().items()}
    if has_backbone:
        module = CellClassifierModule(
            bundle.model, classes=["hem", "all"], class_counts=[1, 1], pretrained=True, frozen_epochs=1,
            finetune_epochs=1, unfreeze_stages=2, lr_head=1e-3, lr_backbone=1e-4, weight_decay=0.0,
        )  # fmt: skip
        module.apply_phase(0)
        trainable = {key for key, p in bundle.model.named_parameters() if p.requires_grad}
        assert trainable == {f"head.{key}" for key, _ in bundle.model.head.named_parameters()}

    run_dir = train(
        tiny_config(model=name, pretrained=pretrained, image_size=_size(name), epochs_frozen=1, epochs_finetune=0)
    )

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    trained = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    changed = {key for key, value in trained.items() if not torch.equal(value, start[key])}
    assert any(key.startswith("head.") for key in changed), "the head must learn"
    if has_backbone:  # phase 1 of a pretrained model: weights, running means/variances and batch counts all fixed
        assert not {key for key in changed if key.startswith("backbone.")}
    else:
        assert any(key.startswith("backbone.") for key in changed), "random init trains every layer at once"
