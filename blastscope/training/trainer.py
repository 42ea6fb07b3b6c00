"""The Lightning side of a fit: module, callbacks, logger, strategy and Trainer for a prepared run."""

from __future__ import annotations

import logging
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from blastscope.errors import BlastscopeError
from blastscope.hardware import cpu_has_native_bf16
from blastscope.models import get_spec
from blastscope.training.callbacks import History, LastPhaseEarlyStopping, Reseed, StderrProgressBar
from blastscope.training.checkpoints import AtomicCheckpointIO, RunCheckpoint
from blastscope.training.config import MONITORS, TrainConfig, lightning_precision
from blastscope.training.lineage import TrainingDataRecord
from blastscope.training.module import CellClassifierModule
from blastscope.training.prepare import Prepared

INTERVAL_CHECKPOINT = "interval"


def resolve_accelerator(config: TrainConfig) -> str:
    if config.accelerator != "auto":
        return config.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def build_module(prepared: Prepared) -> CellClassifierModule:
    config, bundle = prepared.config, prepared.bundle
    counts = Counter(cell.label for cell in prepared.split.parts["train"])
    pretrained = bool(bundle.pretrained)
    return CellClassifierModule(
        bundle.model,
        classes=list(prepared.table.classes),
        class_counts=[counts.get(label, 0) for label in prepared.table.classes],
        pretrained=pretrained,
        frozen_epochs=config.epochs_frozen if pretrained else 0,
        finetune_epochs=config.epochs_finetune if pretrained else config.total_epochs,
        unfreeze_stages=config.unfreeze_stages,
        lr_head=config.lr_head,
        lr_backbone=config.lr_finetune if pretrained else config.lr_head,  # from scratch: no weights to protect
        weight_decay=config.weight_decay,
        cached_features=config.cached_features and pretrained,
        channels_last=config.channels_last,
        frozen_stage_dtype=frozen_stage_dtype(config),
        label_smoothing=float(config.label_smoothing),
        class_balance=config.class_balance,
        head_fit=config.head_fit,
    )


def build_callbacks(prepared: Prepared, module: CellClassifierModule) -> list[Callback]:
    config, run_dir = prepared.config, prepared.run_dir
    mode = MONITORS[config.monitor]
    callbacks: list[Callback] = [
        History(run_dir / "history.csv"),
        Reseed(config.seed),
        TrainingDataRecord(prepared.split),
        LastPhaseEarlyStopping(
            first_epoch=module.last_phase_start,
            monitor=config.monitor,
            mode=mode,
            patience=config.patience,
            check_on_train_epoch_end=True,
        ),
        RunCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=config.monitor,
            mode=mode,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        # Lightning's save_last only writes when a top-k checkpoint was written, so "last" is its own callback.
        RunCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
    ]
    if config.checkpoint_minutes > 0:
        callbacks.append(
            RunCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename=INTERVAL_CHECKPOINT,
                train_time_interval=timedelta(minutes=config.checkpoint_minutes),
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    if config.progress:
        callbacks.append(StderrProgressBar())
    return callbacks


def build_logger(config: TrainConfig, run_dir: Path, logs: str = "") -> Any:
    """The recipe's logger, writing into ``logs/`` or, when ``logs`` names one, a sub-folder of it: a resumed fit
    logs into its own, since Lightning's CSV logger deletes the ``metrics.csv`` it finds (the earlier fit's log)."""
    from lightning.pytorch import loggers

    try:
        if config.logger == "tensorboard":
            return loggers.TensorBoardLogger(run_dir, name="logs", version=logs)
        if config.logger == "mlflow":
            return loggers.MLFlowLogger(
                experiment_name="blastscope", run_name=run_dir.name, tracking_uri=f"file:{run_dir / 'mlruns'}"
            )
    except ModuleNotFoundError as error:
        raise BlastscopeError(
            f"the {config.logger} logger is not installed: pip install 'blastscope[loggers]'"
        ) from error
    return loggers.CSVLogger(run_dir, name="logs", version=logs)


def build_strategy(config: TrainConfig) -> Any:
    """DDP that tolerates parameters without gradients: the frozen ones of phase 1 (all are registered, so the
    stages unfrozen in phase 2 are synchronised too)."""
    from lightning.pytorch.strategies import DDPStrategy

    several = config.num_nodes > 1 or str(config.devices) not in ("1", "auto")
    if config.strategy == "ddp" or (config.strategy == "auto" and several):
        return DDPStrategy(find_unused_parameters=True)
    return config.strategy


class LightningLines(logging.Filter):
    """Lightning's rank-zero lines, trimmed. Its "💡 Tip" lines advertise its cloud services on every fit and say
    nothing about the run: dropped. Its hardware lines ("GPU available: False, used: False") say the same on every fit
    of a process, so ``compare`` and ``--cv`` printed them once per model or fold: each distinct one is kept once."""

    HARDWARE = ("GPU available", "TPU available", "HPU available")

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("💡 Tip"):
            return False
        if message.startswith(self.HARDWARE):
            if message in self._seen:
                return False
            self._seen.add(message)
        return True


_LIGHTNING_LINES = LightningLines()


def build_trainer(prepared: Prepared, module: CellClassifierModule, logs: str = "") -> L.Trainer:
    config = prepared.config
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_LIGHTNING_LINES)  # adding twice: no-op
    accelerator = resolve_accelerator(config)
    if accelerator == "gpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return L.Trainer(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=build_strategy(config),
        precision=training_precision(config, accelerator),
        max_epochs=config.total_epochs,
        callbacks=build_callbacks(prepared, module),
        plugins=[AtomicCheckpointIO()],
        logger=build_logger(config, prepared.run_dir, logs),
        deterministic=True if accelerator == "cpu" else "warn",
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1 if module.hparams.cached_features else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        default_root_dir=prepared.run_dir,
    )


def frozen_stage_dtype(config: TrainConfig) -> str | None:
    """The dtype of the frozen stages' folded copies: bf16 on CPUs with bf16 units, fp32 on other CPUs, none on GPUs."""
    if not config.folded_frozen_stages or resolve_accelerator(config) != "cpu":
        return None
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def training_precision(config: TrainConfig, accelerator: str) -> str:
    return lightning_precision(config.precision, accelerator, get_spec(config.model).cpu_bf16_training)
