"""The two-phase LightningModule: what trains in each phase (on a tiny network and on every registered one),
batch-norm, the stage count, schedule, checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import fit_temperature
from blastscope.models import create_model, get_spec, list_models
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


def _fit(
    module: CellClassifierModule,
    epochs: int,
    tmp_path: Path,
    images: torch.Tensor | None = None,
    **trainer_options: object,
) -> L.Trainer:
    """Fit on 16 cells, random ``(16, 3, 8, 8)`` unless given, that are also the validation cells."""
    images = torch.randn(16, 3, 8, 8) if images is None else images
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


# -- the losses: label smoothing and class balance -----------------------------------------------------------------

LOGITS = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.5, 2.5], [0.0, 1.0], [1.0, 1.2]])
TARGETS = torch.tensor([0, 1, 1, 0, 1])
COUNTS = [10, 30]  # hem, all


def _balancing(class_balance: str, label_smoothing: float = 0.0) -> CellClassifierModule:
    return CellClassifierModule(
        TinyNet(), classes=["hem", "all"], class_counts=COUNTS, pretrained=True, frozen_epochs=1, finetune_epochs=1,
        unfreeze_stages=1, lr_head=1e-2, lr_backbone=1e-3, weight_decay=0.0, class_balance=class_balance,
        label_smoothing=label_smoothing,
    )  # fmt: skip


def _smoothed_cross_entropy(smoothing: float, weight: torch.Tensor | None) -> torch.Tensor:
    """Szegedy et al.'s (1 - e) H(y, p) + e H(u, p), with class weights w as torch weighs it: both terms summed over
    cells with w (w_y for the label, w_c inside the uniform term), divided by the sum of w_y."""
    log_p = LOGITS.log_softmax(dim=1)
    classes = LOGITS.shape[1]
    w = torch.ones(classes) if weight is None else weight
    on_label = -(w[TARGETS] * log_p[torch.arange(len(TARGETS)), TARGETS]).sum()
    on_uniform = -(log_p * w).sum() / classes
    return ((1 - smoothing) * on_label + smoothing * on_uniform) / w[TARGETS].sum()


@pytest.mark.parametrize(("class_balance", "weighted"), [("loss", True), ("sampler", False), ("none", False)])
def test_the_training_loss_smooths_targets_and_weights_classes_only_when_the_loss_balances(
    class_balance: str, weighted: bool
) -> None:
    weight = inverse_frequency_weights(COUNTS) if weighted else None
    smoothed = _balancing(class_balance, 0.2).training_loss(LOGITS, TARGETS)
    plain = _balancing(class_balance).training_loss(LOGITS, TARGETS)
    assert smoothed.item() == pytest.approx(_smoothed_cross_entropy(0.2, weight).item(), rel=1e-6)
    assert plain.item() == pytest.approx(_smoothed_cross_entropy(0.0, weight).item(), rel=1e-6)
    assert abs(smoothed.item() - plain.item()) > 1e-3


def test_without_smoothing_the_default_loss_is_the_class_weighted_one_as_before() -> None:
    weight = inverse_frequency_weights(COUNTS)
    expected = nn.functional.cross_entropy(LOGITS, TARGETS, weight=weight)
    assert torch.equal(_balancing("loss").training_loss(LOGITS, TARGETS), expected)
    assert torch.equal(_balancing("loss").validation_loss(LOGITS, TARGETS), expected)


@pytest.mark.parametrize(("class_balance", "weighted"), [("loss", True), ("sampler", True), ("none", False)])
def test_the_validation_loss_scores_true_labels_with_the_runs_class_balance(class_balance: str, weighted: bool) -> None:
    """No smoothing (best.ckpt and early stopping judge the probabilities the run gives); the class-balanced risk
    whenever the run balances classes, by its loss or by its sampler."""
    weight = inverse_frequency_weights(COUNTS) if weighted else None
    got = _balancing(class_balance, 0.3).validation_loss(LOGITS, TARGETS)
    assert got.item() == pytest.approx(_smoothed_cross_entropy(0.0, weight).item(), rel=1e-6)


def test_an_unknown_class_balance_is_refused() -> None:
    with pytest.raises(BlastscopeError, match="class balance 'oversample' is unknown"):
        _balancing("oversample")


class TwoMemberNet(TinyNet):
    """TinyNet whose head averages two members' probabilities, as efficientnet_lite0_measured's does."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.ModuleList([nn.Linear(8, 2), nn.Linear(8, 2)])
        self.register_buffer("temperatures", torch.ones(2))

    def forward_members(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [member(features) for member in self.head]

    def combine_members(self, member_logits: list[torch.Tensor]) -> torch.Tensor:
        members = torch.stack(
            [(logits / t).log_softmax(1) for logits, t in zip(member_logits, self.temperatures, strict=True)]
        )
        return torch.logsumexp(members, dim=0) - torch.log(torch.tensor(2.0))

    def set_member_temperatures(self, temperatures: list[float]) -> None:
        self.temperatures.copy_(torch.tensor(temperatures))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.combine_members(self.forward_members(features))


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_each_member_of_an_averaging_head_is_trained_on_its_own_loss() -> None:
    """The members learn as an ensemble's do, each from its own cross-entropy, not from the average's."""
    torch.manual_seed(0)
    module = CellClassifierModule(
        TwoMemberNet(), classes=["hem", "all"], class_counts=[10, 30], pretrained=True, frozen_epochs=1,
        finetune_epochs=0, unfreeze_stages=1, lr_head=1e-2, lr_backbone=1e-3, weight_decay=0.0,
    )  # fmt: skip
    module.train()
    module.apply_phase(0)
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 1, 0, 1, 1])
    loss = module.training_step((images, labels), 0)
    loss.backward()
    features = module.model.forward_features(images).detach()
    for member in module.model.head:
        own = module.training_loss(member(features), labels) / 2
        expected = torch.autograd.grad(own, member.weight)[0]
        torch.testing.assert_close(member.weight.grad, expected)
    averaged = module.training_loss(module.model.forward_head(features), labels)
    assert abs(loss.item() - averaged.item()) > 1e-4  # not the average's loss


def test_each_members_temperature_is_fitted_on_the_validation_cells_and_val_loss_scores_the_tempered_average(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    module = CellClassifierModule(
        TwoMemberNet(), classes=["hem", "all"], class_counts=[8, 8], pretrained=True, frozen_epochs=1,
        finetune_epochs=0, unfreeze_stages=1, lr_head=1e-1, lr_backbone=1e-3, weight_decay=0.0,
    )  # fmt: skip
    images, labels = torch.randn(16, 3, 8, 8), torch.tensor([0, 1] * 8)
    trainer = _fit(module, 1, tmp_path, images, enable_checkpointing=False)
    module.eval()
    with torch.no_grad():
        members = module.model.forward_members(module.model.forward_features(images))
    expected = [fit_temperature(labels.numpy(), logits.numpy()) for logits in members]
    assert expected[0] != pytest.approx(1.0, abs=1e-2) and expected[0] != pytest.approx(expected[1], abs=1e-2)
    assert module.model.temperatures.tolist() == pytest.approx(expected, rel=1e-5)
    tempered = module.validation_loss(module.model.combine_members(members), labels)
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(float(tempered), rel=1e-5)


# -- every registered network: the phases' trainable parameters and batch-norm modes ---------------------------------

ALL = list_models()


def _small_size(name: str) -> int:
    return max(32, get_spec(name).min_input_size)


@pytest.fixture(scope="module")
def built() -> dict[str, CellClassifier]:
    return {}


@pytest.fixture
def network(built: dict[str, CellClassifier]):
    """``network(name)``: the module's random-init build of ``name`` (weights do not matter to what is frozen)."""

    def get(name: str) -> CellClassifier:
        if name not in built:
            torch.manual_seed(0)
            built[name] = create_model(name, pretrained="none", image_size=_small_size(name)).model
        return built[name]

    return get


def _phases_of(model: CellClassifier, unfreeze: int | str, pretrained: bool = True) -> CellClassifierModule:
    """A module training ``model`` one epoch per phase, in train mode as Lightning puts it."""
    module = CellClassifierModule(
        model, classes=["hem", "all"], class_counts=[1, 1], pretrained=pretrained, frozen_epochs=1 if pretrained else 0,
        finetune_epochs=1, unfreeze_stages=unfreeze, lr_head=1e-3, lr_backbone=1e-4, weight_decay=0.0,
    )  # fmt: skip
    return module.train()


def _batch_norm_statistics(model: CellClassifier) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.backbone.named_buffers() if "running" in name}


def _forward_keeps_statistics(name: str, model: CellClassifier) -> bool:
    """Whether a training-mode forward leaves every backbone batch-norm statistic as it was."""
    before = _batch_norm_statistics(model)
    size = _small_size(name)
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    after = dict(model.backbone.named_buffers())
    return all(torch.equal(value, after[key]) for key, value in before.items())


@pytest.mark.parametrize("name", ALL)
def test_phase_1_trains_the_head_only_and_keeps_batchnorm_statistics(name: str, network) -> None:
    model = network(name)
    module = _phases_of(model, unfreeze=1)
    module.apply_phase(0)
    trainable = {key for key, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"head.{key}" for key, _ in model.head.named_parameters()}
    assert not any(m.training for m in model.backbone.modules())  # batch norm and dropout alike
    assert model.head.training
    assert _forward_keeps_statistics(name, model)


@pytest.mark.parametrize("name", ALL)
def test_phase_2_unfreezes_exactly_the_last_n_stages(name: str, network) -> None:
    model = network(name)
    stages = model.stages()
    in_backbone = set(model.backbone.modules())  # not the ModuleList grouping a timm stage's modules
    for count in (1, 2):
        _phases_of(model, unfreeze=count).apply_phase(1)
        for index, stage in enumerate(stages):
            unfrozen = index >= len(stages) - count
            assert all(p.requires_grad == unfrozen for p in stage.parameters()), (count, index)
            # Pretrained batch norm learns its scale and shift, never its statistics; dropout and the rest train.
            for layer in filter(in_backbone.__contains__, stage.modules()):
                assert layer.training == (unfrozen and not isinstance(layer, _BatchNorm)), (count, index, layer)
        assert all(p.requires_grad for p in model.head.parameters()) and model.head.training
        assert _forward_keeps_statistics(name, model)


@pytest.mark.parametrize("name", ALL)
def test_all_stages_unfreeze_the_whole_network(name: str, network) -> None:
    model = network(name)
    _phases_of(model, unfreeze="all").apply_phase(1)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))
    assert _forward_keeps_statistics(name, model)
    _phases_of(model, unfreeze=1, pretrained=False).apply_phase(0)  # random init: everything, statistics included
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("name", ALL)
def test_more_stages_than_the_backbone_has_are_refused_before_training(name: str, network) -> None:
    model = network(name)
    stages = len(model.stages())
    _phases_of(model, unfreeze=stages)  # every stage is a valid count
    for pretrained in (True, False):  # refused even where random init ignores it: weights must not decide
        with pytest.raises(BlastscopeError, match=f"cannot unfreeze {stages + 1} stages: this model's backbone has "):
            _phases_of(model, unfreeze=stages + 1, pretrained=pretrained)


@pytest.mark.parametrize("unfreeze", [-1, "two", True, 1.5])
def test_unfreeze_stages_must_be_a_count_or_all(unfreeze: object) -> None:
    with pytest.raises(BlastscopeError, match="pass --unfreeze-stages from 0 to 3 or 'all'"):
        _module(unfreeze=unfreeze)  # type: ignore[arg-type]
