"""The LightningModule: two-phase transfer learning (frozen backbone, then partial fine-tuning) of a CellClassifier.

The phase is a function of the epoch number alone, so a run resumed from any checkpoint lands in the right phase with
the right trainable layers, and one optimizer (head and backbone parameter groups) plus one LambdaLR schedule carry
the whole run, which Lightning checkpoints and restores as they are.

This module is the one place that decides what is frozen: :meth:`CellClassifierModule.apply_phase` sets every
backbone parameter's ``requires_grad`` and every backbone module's training flag for the phase.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import fit_temperature
from blastscope.models.base import CellClassifier
from blastscope.training.config import CLASS_BALANCE, HEAD_FITS
from blastscope.training.frozen import DTYPES, FrozenStages
from blastscope.training.head_fit import fit_logistic_head

FROZEN, FINETUNE, FULL = "frozen", "finetune", "full"
TRAIN_LOSS_STATE = "blastscope_train_loss"  # the checkpoint key of the epoch's partial training-loss mean
HEAD_FIT_STATE = "blastscope_head_fit"  # the checkpoint key of a closed-form head fit's record


def inverse_frequency_weights(class_counts: list[int]) -> torch.Tensor:
    """Loss weights n / (k * n_c): each class contributes equally to the loss whatever its share of the cells."""
    counts = torch.tensor(class_counts, dtype=torch.float32).clamp(min=1)
    return counts.sum() / (len(counts) * counts)


def cosine(step: int, length: int) -> float:
    """Cosine decay from 1 towards 0 over ``length`` epochs (never exactly 0, so the last epoch still learns)."""
    return 0.5 * (1 + math.cos(math.pi * step / max(length, 1)))


def unfrozen_stage_count(unfreeze_stages: int | str, stage_count: int) -> int:
    """How many of a backbone's ``stage_count`` stages, counted from the output, learn in the fine-tuning phase.

    Parameters
    ----------
    unfreeze_stages : int or "all"
        The recipe's setting.
    stage_count : int
        Stages of the model's backbone (``len(model.stages())``).

    Returns
    -------
    int
        From 0 to ``stage_count``; ``stage_count`` for ``"all"``.

    Raises
    ------
    BlastscopeError
        If ``unfreeze_stages`` is neither ``"all"`` nor a count from 0 to ``stage_count``; the message names the
        model's stage count.
    """
    if unfreeze_stages == "all":
        return stage_count
    if isinstance(unfreeze_stages, int) and not isinstance(unfreeze_stages, bool):
        if 0 <= unfreeze_stages <= stage_count:
            return unfreeze_stages
    raise BlastscopeError(
        f"cannot unfreeze {unfreeze_stages!r} stages: this model's backbone has {stage_count}; "
        f"pass --unfreeze-stages from 0 to {stage_count} or 'all'"
    )


class CellClassifierModule(L.LightningModule):
    """Trains ``model`` with cross-entropy, Adam(W) and a cosine schedule that restarts per phase.

    The training loss is weighted by inverse class frequency when ``class_balance`` is ``loss`` (with ``sampler`` the
    data module draws the classes equally instead, with ``none`` nothing is balanced) and computed against targets
    smoothed by ``label_smoothing`` (Szegedy et al. 2016). ``val_loss``, which picks best.ckpt and stops early, is the
    cross-entropy against the true labels, without smoothing: it scores the probabilities the run will give, not the
    regularised target. It is class-weighted whenever the run balances classes (``loss`` or ``sampler``), as both
    minimise the same class-balanced risk (a sampler that draws each class with probability 1/k is, in expectation,
    the inverse-frequency weighted loss), and unweighted with ``none``. A head that averages members' probabilities
    (:meth:`CellClassifier.forward_members`) trains each member on its own training loss, ``train_loss`` being their
    mean; after each epoch every member's temperature is fitted on all the validation cells
    (:meth:`CellClassifier.set_member_temperatures`, saved with the checkpoint) and ``val_loss`` scores the tempered
    average the network then outputs.

    A ``pretrained`` model first trains the head only for ``frozen_epochs`` epochs while the backbone (batch-norm
    statistics included) stays fixed, then the last ``unfreeze_stages`` stages (or "all") train at ``lr_backbone``
    with their batch-norm statistics still fixed; with ``frozen_epochs`` == 0 it goes straight to that fine-tuning.
    A randomly initialised model (``pretrained`` false) trains every layer from the first epoch at ``lr_backbone``
    (the engine then passes the from-scratch rate, ``lr_head``) and ``frozen_epochs`` must be 0.
    The head keeps its Adam moments across the phase change; only its learning rate drops to ``lr_backbone``.
    With ``head_fit`` ``logistic`` the frozen phase is one epoch that fits the head in closed form at its start
    (:func:`~blastscope.training.head_fit.fit_logistic_head`, on the data module's cached features) and then only
    scores it: the head stays in inference mode and its learning rate is 0 for that epoch.
    With ``frozen_stage_dtype`` ("bfloat16" or "float32") the stages frozen in the current phase run as folded
    inference copies in that dtype (see :mod:`blastscope.training.frozen`) until ``teardown`` hands the network back
    unchanged.
    Hyper-parameters are plain types only, so checkpoints load with ``torch.load(weights_only=True)``.

    Raises
    ------
    BlastscopeError
        At construction, before any training, if ``unfreeze_stages`` is neither "all" nor a count from 0 to the
        model's number of stages (:meth:`CellClassifier.stages`); checked whether or not the model is pretrained, so
        that a recipe does not fail or pass depending on which weights could be had. Also for an unknown
        ``class_balance``, and for a ``logistic`` head fit without pretrained weights, cached features, a linear head
        or exactly one frozen epoch.
    """

    def __init__(
        self,
        model: CellClassifier,
        *,
        classes: list[str],
        class_counts: list[int],
        pretrained: bool,
        frozen_epochs: int,
        finetune_epochs: int,
        unfreeze_stages: int | str,
        lr_head: float,
        lr_backbone: float,
        weight_decay: float,
        cached_features: bool = False,
        channels_last: bool = False,
        frozen_stage_dtype: str | None = None,
        label_smoothing: float = 0.0,
        class_balance: str = "loss",
        head_fit: str = "adam",
    ) -> None:
        unfrozen_stage_count(unfreeze_stages, len(model.stages()))
        if class_balance not in CLASS_BALANCE:
            raise BlastscopeError(f"class balance {class_balance!r} is unknown: use one of {', '.join(CLASS_BALANCE)}")
        check_head_fit(head_fit, model, pretrained=pretrained, frozen_epochs=frozen_epochs, cached=cached_features)
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.frozen_stages = FrozenStages(DTYPES[frozen_stage_dtype], channels_last) if frozen_stage_dtype else None
        self.register_buffer("class_weights", inverse_frequency_weights(class_counts))
        self.val_accuracy = MulticlassAccuracy(num_classes=len(classes), average="micro")
        self.val_weighted_f1 = MulticlassF1Score(num_classes=len(classes), average="weighted")
        self.train_loss_mean = MeanMetric()
        self.head_fit_record: dict[str, Any] | None = None  # what a closed-form head fit chose (to_dict)
        self._validation_members: list[tuple[torch.Tensor, torch.Tensor]] = []  # (members, N, C) logits, targets

    # -- phases -------------------------------------------------------------------------------------------------

    def phase(self, epoch: int) -> str:
        """FULL for a randomly initialised model; FROZEN then FINETUNE for a pretrained one (FINETUNE at once with no
        frozen epochs)."""
        if not self.hparams.pretrained:
            return FULL
        return FROZEN if epoch < self.hparams.frozen_epochs else FINETUNE

    @property
    def last_phase_start(self) -> int:
        """The first epoch of the run's last phase, the one early stopping watches: fine-tuning's, or 0 when the
        frozen phase is the only one (``finetune_epochs`` 0: the head alone) or there are no phases (random init)."""
        return self.hparams.frozen_epochs if self.hparams.finetune_epochs > 0 else 0

    def uses_cached_features(self, epoch: int) -> bool:
        return bool(self.hparams.cached_features) and self.phase(epoch) == FROZEN

    def fits_head_in_closed_form(self, phase: str) -> bool:
        """Whether ``phase`` fits the head as a logistic regression instead of by gradient steps."""
        return self.hparams.head_fit == "logistic" and phase == FROZEN

    def trainable_backbone_modules(self, phase: str) -> list[nn.Module]:
        """The backbone's modules that learn in ``phase``: none in phase 1, the last stages (or all) in phase 2."""
        if phase == FROZEN:
            return []
        if phase == FULL or self.hparams.unfreeze_stages == "all":
            return [self.model.backbone]
        return self._stages(phase)[1]

    def frozen_backbone_modules(self, phase: str) -> list[nn.Module]:
        """The stages' modules that stay frozen in ``phase``: all of them in phase 1, the early ones in phase 2."""
        if phase == FULL or (phase == FINETUNE and self.hparams.unfreeze_stages == "all"):
            return []
        stages = self._stages(phase)[0]
        return [module for stage in stages for module in (stage if isinstance(stage, nn.ModuleList) else [stage])]

    def _stages(self, phase: str) -> tuple[list[nn.Module], list[nn.Module]]:
        """The backbone's (frozen, trainable) stages in a phase of a pretrained model."""
        stages = self.model.stages()
        count = 0 if phase == FROZEN else unfrozen_stage_count(self.hparams.unfreeze_stages, len(stages))
        return stages[: len(stages) - count], stages[len(stages) - count :]

    def apply_phase(self, epoch: int) -> None:
        """Freeze everything but the head and the stages that learn in ``epoch``'s phase.

        Sets ``requires_grad`` of every backbone and head parameter and the training flag of every backbone and head
        module, so it can be called in any state: the head always learns (in train mode when this module is); the
        backbone's parameters learn only in the phase's trainable modules (:meth:`trainable_backbone_modules`), and
        its modules are in eval mode elsewhere. With a trainer attached, :meth:`train` calls it after switching
        modes; without one, call it after ``train()``, which on its own puts every layer in train mode.

        A pretrained backbone's batch-norm layers stay in inference mode in both phases (their scale and shift still
        train once unfrozen), so their running statistics never change: re-estimating ImageNet statistics from small
        batches of cells undoes what phase 1 learned on top of them. Randomly initialised networks train their
        batch-norm normally.

        Parameters
        ----------
        epoch : int
            The 0-based epoch whose phase (:meth:`phase`) to apply.
        """
        phase = self.phase(epoch)
        self.model.backbone.requires_grad_(False)
        self.model.backbone.eval()
        for module in self.trainable_backbone_modules(phase):
            module.requires_grad_(True)
            for layer in module.modules():  # flag by flag: Module.train() would recurse into the batch-norm layers
                layer.training = self.training and (
                    phase == FULL or not isinstance(layer, nn.modules.batchnorm._BatchNorm)
                )
        self.model.head.requires_grad_(True)
        self.model.head.train(self.training and not self.fits_head_in_closed_form(phase))
        self._follow_frozen(phase)

    def _follow_frozen(self, phase: str) -> None:
        if self.frozen_stages is not None:
            self.frozen_stages.follow(self.frozen_backbone_modules(phase))

    def train(self, mode: bool = True) -> CellClassifierModule:
        super().train(mode)
        if mode and self._trainer is not None:
            self.apply_phase(self.trainer.current_epoch)
        return self

    def on_fit_start(self) -> None:
        # Before the first loaders are built, so the phase-1 feature pass already runs the frozen stages in bf16.
        self._follow_frozen(self.phase(self.current_epoch))

    def teardown(self, stage: str) -> None:
        if self.frozen_stages is not None:
            self.frozen_stages.release()  # the network leaves fitting exactly as it came

    def on_train_start(self) -> None:
        # After a checkpoint is restored (so the epoch is right) and also on a mid-epoch restart, where Lightning skips
        # on_train_epoch_start. Networks arrive in eval mode from create_model and Lightning does not switch them.
        self.train()

    def on_train_epoch_start(self) -> None:
        # Lightning skips this hook when it resumes mid-epoch, so the restored partial mean carries on there.
        self.apply_phase(self.current_epoch)
        self.train_loss_mean.reset()
        if self.fits_head_in_closed_form(self.phase(self.current_epoch)):
            features = self.trainer.datamodule.cached_features()
            weights = self.class_weights if self.hparams.class_balance != "none" else None
            fit = fit_logistic_head(
                self.model,
                features["train"],
                features["val"],
                class_weights=weights,
                batches=int(self.trainer.num_training_batches),
            )
            self.head_fit_record = fit.to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The epoch's training loss so far, so a run resumed mid-epoch logs the mean over the whole epoch (Lightning
        does not checkpoint its own running means)."""
        checkpoint[TRAIN_LOSS_STATE] = {name: float(value) for name, value in self.train_loss_mean.metric_state.items()}
        if self.head_fit_record is not None:
            checkpoint[HEAD_FIT_STATE] = self.head_fit_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.head_fit_record = checkpoint.get(HEAD_FIT_STATE, self.head_fit_record)
        for name, value in checkpoint.get(TRAIN_LOSS_STATE, {}).items():
            state = getattr(self.train_loss_mean, name)
            setattr(self.train_loss_mean, name, torch.tensor(value, dtype=state.dtype, device=state.device))

    # -- steps --------------------------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._laid_out(images))

    def _laid_out(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _features(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the head consumes: the batch itself when it is cached features, else the backbone's output."""
        if self.uses_cached_features(self.current_epoch):
            return inputs
        return self.model.forward_features(self._laid_out(inputs))

    def training_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against smoothed targets, class-weighted only when the loss does the balancing."""
        weight = self.class_weights if self.hparams.class_balance == "loss" else None
        return nn.functional.cross_entropy(
            logits.float(), targets, weight=weight, label_smoothing=self.hparams.label_smoothing
        )

    def validation_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the true labels, class-weighted whenever the run balances classes."""
        weight = self.class_weights if self.hparams.class_balance != "none" else None
        return nn.functional.cross_entropy(logits.float(), targets, weight=weight)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        """The mean of the training losses of the network's members (:meth:`CellClassifier.forward_members`): the
        head's own loss for a plain head; each member of an averaging head fitted on its own, as an ensemble's are."""
        inputs, targets = batch
        members = self.model.forward_members(self._features(inputs))
        loss = torch.stack([self.training_loss(logits, targets) for logits in members]).mean()
        self.train_loss_mean.update(loss.detach(), weight=len(targets))
        self.log("train_loss", self.train_loss_mean, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        inputs, targets = batch
        members = self.model.forward_members(self._features(inputs))
        if len(members) > 1:  # scored at the epoch's end, once the members' temperatures are fitted on every cell
            self._validation_members.append((torch.stack(members).detach().float(), targets))
            return
        (logits,) = members
        self.val_accuracy.update(logits, targets)
        self.val_weighted_f1.update(logits, targets)
        self.log(
            "val_loss",
            self.validation_loss(logits, targets),
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(targets),
        )
        self.log("val_accuracy", self.val_accuracy, on_epoch=True)
        self.log("val_weighted_f1", self.val_weighted_f1, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        """For a network of several members: fit each member's temperature on all the validation cells (every process's
        under DDP, so all fit the same), then score the average the network outputs with them."""
        if not self._validation_members:
            return
        members = torch.cat([logits for logits, _ in self._validation_members], dim=1)
        targets = torch.cat([labels for _, labels in self._validation_members])
        self._validation_members = []
        if self.trainer.world_size > 1:
            members = self.all_gather(members).transpose(0, 1).flatten(1, 2)
            targets = self.all_gather(targets).flatten()
        labels = targets.cpu().numpy()
        self.model.set_member_temperatures([fit_temperature(labels, logits.cpu().numpy()) for logits in members])
        logits = self.model.combine_members(list(members))
        classes = logits.shape[1]
        self.log("val_loss", self.validation_loss(logits, targets), prog_bar=True)
        self.log("val_accuracy", multiclass_accuracy(logits, targets, classes, average="micro"))
        self.log("val_weighted_f1", multiclass_f1_score(logits, targets, classes, average="weighted"), prog_bar=True)

    # -- optimisation -------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """One AdamW over head and backbone groups for the whole run; frozen parameters get no gradient, so no step."""
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [
                {"params": self.model.head.parameters(), "lr": hp.lr_head, "name": "head"},
                {"params": self.model.backbone.parameters(), "lr": hp.lr_backbone, "name": "backbone"},
            ],
            weight_decay=hp.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, [self._head_factor, self._backbone_factor])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def _head_factor(self, epoch: int) -> float:
        hp = self.hparams
        if self.fits_head_in_closed_form(self.phase(epoch)):
            return 0.0  # fitted at the epoch's start; its steps only score it
        if self.phase(epoch) == FROZEN:
            return cosine(epoch, hp.frozen_epochs)
        return hp.lr_backbone / hp.lr_head * cosine(epoch - hp.frozen_epochs, hp.finetune_epochs)

    def _backbone_factor(self, epoch: int) -> float:
        hp = self.hparams
        if self.phase(epoch) == FROZEN:
            return 0.0
        return cosine(epoch - hp.frozen_epochs, hp.finetune_epochs)


def check_head_fit(
    head_fit: str,
    model: CellClassifier,
    *,
    pretrained: bool,
    frozen_epochs: int,
    cached: bool,
    model_name: str = "this model",
) -> None:
    """A ``logistic`` head fit needs a frozen phase of one epoch on cached features and a linear head to fit.

    ``model_name`` (the registered name, e.g. ``efficientnet_b0_attention``) is what the refusal calls the model.
    """
    if head_fit not in HEAD_FITS:
        raise BlastscopeError(f"head fit {head_fit!r} is unknown: use one of {', '.join(HEAD_FITS)}")
    if head_fit != "logistic":
        return
    if model.linear_head() is None:  # first: no weights can mend this one
        raise BlastscopeError(
            f"--head-fit logistic needs a head that is one linear layer on the features; {model_name}'s is not: "
            "use --head-fit adam"
        )
    if not pretrained:
        raise BlastscopeError(
            "--head-fit logistic fits the head on a frozen pretrained backbone, and this model starts from random "
            "weights (every layer trains): give it pretrained weights (--pretrained) or use --head-fit adam"
        )
    if frozen_epochs != 1 or not cached:
        raise BlastscopeError(
            "--head-fit logistic fits the head in one frozen epoch on cached features: give --epochs-frozen 1 and "
            "keep the cached features"
        )
