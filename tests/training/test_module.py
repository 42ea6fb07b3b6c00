"""The two-phase LightningModule on a tiny network: what trains in each phase, batch-norm, schedule, checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from blastscope.models.base import CellClassifier
from blastscope.training.module import FINETUNE, FROZEN, FULL, CellClassifierModule, inverse_frequency_weights


class TinyNet(CellClassifier):
    def __init__(self) -> None:
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
        self.backbone = nn.Sequential(block(3, 4), block(4, 6), block(6, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 2))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def stages(self) -> list[nn.Module]:
        return list(self.backbone[:3])

    def gradcam_layer(self) -> nn.Module:
        return self.backbone[2]


def _module(
    frozen: int = 1, finetune: int = 1, unfreeze: int | str = 1, pretrained: bool | None = None
) -> CellClassifierModule:
    torch.manual_seed(0)
    return CellClassifierModule(
        TinyNet(),
        classes=["hem", "all"],
        class_counts=[10, 30],
        pretrained=frozen > 0 if pretrained is None else pretrained,
        frozen_epochs=frozen,
        finetune_epochs=finetune,
        unfreeze_stages=unfreeze,
        lr_head=1e-2,
        lr_backbone=1e-3,
        weight_decay=1e-4,
    )


def _fit(module: CellClassifierModule, epochs: int, tmp_path: Path, **trainer_options: object) -> L.Trainer:
    images = torch.randn(16, 3, 8, 8)
    labels = torch.tensor([0, 1] * 8)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_options,
    )
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_frozen_phase_trains_the_head_only_and_keeps_batchnorm_statistics(tmp_path: Path) -> None:
    module = _module()
    backbone_before, head_before = _state(module.model.backbone), _state(module.model.head)
    seen: dict[str, object] = {}

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            seen["trainable"] = {name for name, p in pl_module.model.named_parameters() if p.requires_grad}
            seen["bn_training"] = [
                m.training for m in pl_module.model.backbone.modules() if isinstance(m, nn.BatchNorm2d)
            ]

    _fit(module, 1, tmp_path, callbacks=[Probe()], enable_checkpointing=False)
    assert seen["trainable"] == {f"head.{name}" for name, _ in module.model.head.named_parameters()}
    assert seen["bn_training"] == [False, False, False]
    for key, value in module.model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key  # weights and running mean/var/batch count alike
    assert any(not torch.equal(v, head_before[k]) for k, v in module.model.head.state_dict().items())


def test_finetune_phase_unfreezes_the_last_stages_only(tmp_path: Path) -> None:
    module = _module(frozen=1, finetune=1, unfreeze=1)
    before = _state(module.model.backbone)
    _fit(module, 2, tmp_path, enable_checkpointing=False)
    after = module.model.backbone.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    assert {key.split(".")[0] for key in changed} == {"2"}  # the last of three stages only
    assert "2.1.weight" in changed  # its batch-norm scale trains, its ImageNet statistics stay
    assert not {key for key in changed if "running" in key or "num_batches" in key}


def test_random_init_trains_every_layer_from_the_first_epoch() -> None:
    module = _module(frozen=0, finetune=2)
    assert module.phase(0) == FULL and module.phase(1) == FULL
    module.apply_phase(0)
    assert all(p.requires_grad for p in module.model.parameters())
    assert all(m.training for m in module.model.modules())  # batch-norm statistics are learnt from scratch


def test_pretrained_without_frozen_epochs_fine_tunes_from_the_first_epoch(tmp_path: Path) -> None:
    module = _module(frozen=0, finetune=2, unfreeze=1, pretrained=True)
    assert module.phase(0) == FINETUNE and module.phase(1) == FINETUNE
    assert not module.uses_cached_features(0)
    assert module._head_factor(0) * 1e-2 == pytest.approx(1e-3)  # the head starts at the fine-tuning rate
    assert module._backbone_factor(0) == pytest.approx(1.0)
    before = _state(module.model.backbone)
    _fit(module, 1, tmp_path, enable_checkpointing=False)
    after = module.model.backbone.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    assert {key.split(".")[0] for key in changed} == {"2"}  # the last stage only, as in fine-tuning
    assert not {key for key in changed if "running" in key or "num_batches" in key}


def test_learning_rate_restarts_a_cosine_per_phase() -> None:
    module = _module(frozen=2, finetune=2)
    assert [module.phase(e) for e in range(4)] == [FROZEN, FROZEN, FINETUNE, FINETUNE]
    head = [module._head_factor(e) * 1e-2 for e in range(4)]
    backbone = [module._backbone_factor(e) * 1e-3 for e in range(4)]
    assert head == pytest.approx([1e-2, 5e-3, 1e-3, 5e-4])  # the head drops to the fine-tuning rate
    assert backbone == pytest.approx([0, 0, 1e-3, 5e-4])


def test_loss_weights_are_inverse_to_class_frequency() -> None:
    assert inverse_frequency_weights([10, 30]).tolist() == pytest.approx([2.0, 2 / 3])


def test_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    module = _module()
    trainer = _fit(module, 2, tmp_path)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["unfreeze_stages"] == 1
    assert all(key.startswith(("model.", "class_weights", "val_")) for key in checkpoint["state_dict"])


def test_early_stopping_watches_the_last_phase_only(tmp_path: Path) -> None:
    from blastscope.training.callbacks import LastPhaseEarlyStopping

    module = _module(frozen=2, finetune=4)
    module.hparams.lr_head = module.hparams.lr_backbone = 1e-30  # nothing learns: val_loss never improves
    stopper = LastPhaseEarlyStopping(first_epoch=2, monitor="val_loss", patience=1, check_on_train_epoch_end=True)
    trainer = _fit(module, 6, tmp_path, callbacks=[stopper], enable_checkpointing=False)
    assert trainer.current_epoch == 4  # epochs 0-1 ignored, 2 sets the best, 3 fails to beat it: stop after 4 epochs
