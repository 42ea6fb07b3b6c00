"""``train(config)``: scan, split, build, fit in two phases on Lightning, then score the test split."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from blastscope.data.attribution import dataset_attribution
from blastscope.data.datamodule import CellDataModule, augment_config
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError, DataError
from blastscope.models import get_spec
from blastscope.runs.folder import (
    RUN_DIR_ENV,
    checkpoint_path,
    load_network_weights,
    new_run_dir,
    read_config,
    run_eval_transform,
)
from blastscope.training.callbacks import History, LastPhaseEarlyStopping, Reseed
from blastscope.training.config import MONITORS, TrainConfig, cpu_has_native_bf16, resolve_precision, write_yaml
from blastscope.training.features import extract_features
from blastscope.training.module import CellClassifierModule

if TYPE_CHECKING:
    from blastscope.data.split import Split
    from blastscope.models import ModelBundle

log = logging.getLogger(__name__)

INTERVAL_CHECKPOINT = "interval"
VERSIONED_PACKAGES = (
    "blastscope",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "numpy",
    "scikit-learn",
)


@dataclass
class Prepared:
    """Everything decided before fitting: data, split, network and where the run lives."""

    config: TrainConfig
    table: CellTable
    split: Split
    bundle: ModelBundle
    run_dir: Path


def train(config: TrainConfig, run_dir: Path | None = None) -> Path:
    """Train a new run from ``config``; returns the run directory."""
    config = _complete(config)
    worker = RUN_DIR_ENV in os.environ  # a DDP worker process: its launcher made the run directory
    if run_dir is not None and not worker and (Path(run_dir) / "config.yaml").exists():
        raise BlastscopeError(f"{run_dir} already holds a run: continue it with --resume or choose another --run-dir")
    L.seed_everything(config.seed, workers=True, verbose=False)
    table = _scan(config)
    split = _split(config, table)
    bundle = _create_model(config, table)
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(Path(config.out), config.model)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    prepared = Prepared(config, table, split, bundle, run_dir)
    if not worker:
        _write_run_files(prepared)
    return _fit(prepared, resume_from=None)


def resume(run_dir: Path) -> Path:
    """Continue a run from its latest checkpoint, epoch-end or mid-epoch (from scratch if none was written yet)."""
    from blastscope.data.split import read_split_csv

    run_dir = Path(run_dir)
    recorded = read_config(run_dir)
    config = _complete(TrainConfig.from_dict(recorded))
    L.seed_everything(config.seed, workers=True, verbose=False)
    table = _scan(config)
    if "classes" in recorded and list(table.classes) != list(recorded["classes"]):
        raise DataError(
            f"{run_dir}: the data at {config.data} now has classes {list(table.classes)}, the run was trained on "
            f"{list(recorded['classes'])}; restore the data or start a new run"
        )
    split = read_split_csv(run_dir / "split.csv", table)
    if "split_hash" in recorded and split.hash != recorded["split_hash"]:
        raise DataError(
            f"{run_dir}: split.csv no longer matches the split the run was trained on (hash {split.hash} != "
            f"{recorded['split_hash']}); restore it or start a new run"
        )
    checkpoint = latest_checkpoint(run_dir)
    bundle = _resumed_model(config, table, recorded, run_dir, from_checkpoint=checkpoint is not None)
    return _fit(Prepared(config, table, split, bundle, run_dir), resume_from=checkpoint)


def _resumed_model(
    config: TrainConfig, table: CellTable, recorded: dict[str, Any], run_dir: Path, from_checkpoint: bool
) -> ModelBundle:
    """The run's network as recorded in config.yaml, not as its ``pretrained`` request would resolve today.

    With a checkpoint the weights come from it, so the network is built without weights (no hub access, no weights
    file needed) and its pretrained-ness, which sets the phase schedule, is taken from ``weights_pretrained``. Without
    one the weights are fetched again and must resolve as they did.
    """
    if not from_checkpoint:
        bundle = _create_model(config, table)
        if "weights_pretrained" in recorded and bool(bundle.pretrained) != bool(recorded["weights_pretrained"]):
            raise BlastscopeError(
                f"{run_dir}: pretrained={config.pretrained} now gives {bundle.weights_source}, the run started from "
                f"{recorded.get('weights_source')}; make those weights available again or start a new run"
            )
        return bundle
    bundle = _create_model(replace(config, pretrained="none"), table)
    bundle.pretrained = bool(recorded.get("weights_pretrained", bundle.pretrained))
    bundle.weights_source = str(recorded.get("weights_source", bundle.weights_source))
    return bundle


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The furthest-trained of the epoch-end ``last.ckpt`` and the mid-epoch ``interval.ckpt``, if any exists."""
    candidates = [run_dir / "checkpoints" / f"{name}.ckpt" for name in ("last", INTERVAL_CHECKPOINT)]
    steps = {path: _global_step(path) for path in candidates if path.is_file()}
    return max(steps, key=steps.__getitem__) if steps else None


def _global_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception as error:  # Lightning writes atomically, so this is a foreign or damaged file
        raise BlastscopeError(
            f"{path}: unreadable checkpoint ({error}); delete it to resume from the other one"
        ) from error


# -- preparation ----------------------------------------------------------------------------------------------


def _complete(config: TrainConfig) -> TrainConfig:
    """The recipe with the model's own defaults filled in, checked before any data is read."""
    return config.with_defaults(get_spec(config.model).defaults.to_dict()).validate()


def _scan(config: TrainConfig) -> CellTable:
    from blastscope.data.discover import scan_dataset

    table = scan_dataset(Path(config.data))
    if table.skipped:
        log.warning("%d unreadable files skipped in %s (see metrics.json)", len(table.skipped), config.data)
    return table


def _split(config: TrainConfig, table: CellTable) -> Split:
    from blastscope.data.split import check_leakage, kfold_splits, make_split, read_split_csv

    if config.split.csv:
        split = read_split_csv(Path(config.split.csv), table)
    elif config.split.folds:
        split = kfold_splits(table, config.split.folds, seed=config.seed, by=config.split.by)[config.split.fold]
    else:
        split = make_split(table, ratios=tuple(config.split.ratios), seed=config.seed, by=config.split.by)
    if not split.subject_level:
        log.warning("split by image: cells of one subject can land in train and test, which inflates test scores")
    check_leakage(split)
    for part in ("train", "val"):
        if not split.parts.get(part):
            raise DataError(f"{config.data}: the split leaves no {part} cells; add cells or change --split-ratios")
    return split


def _create_model(config: TrainConfig, table: CellTable) -> ModelBundle:
    from blastscope.models import create_model

    return create_model(
        config.model, num_classes=len(table.classes), pretrained=config.pretrained, image_size=config.image_size
    )


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _write_run_files(prepared: Prepared) -> None:
    """config.yaml holds the recipe (re-runnable with --config) plus what it resolved to on this machine."""
    from blastscope.data.split import write_split_csv

    config, bundle = prepared.config, prepared.bundle
    recipe = config.to_dict()
    recipe["image_size"] = bundle.preprocessing.input_size
    recipe["augmentation"] = augment_config(config.augmentation).to_dict()  # every switch, so predictors can rebuild it
    resolved = {
        "classes": list(prepared.table.classes),
        "attribution": dataset_attribution(prepared.table),
        "preprocessing": bundle.preprocessing.to_dict(),
        "weights_source": bundle.weights_source,
        "weights_pretrained": bool(bundle.pretrained),
        "split_hash": prepared.split.hash,
        "split_subject_level": bool(prepared.split.subject_level),
        "resolved_precision": _precision(config, _accelerator(config)),
        "versions": _versions(),
    }
    write_yaml({**recipe, **resolved}, prepared.run_dir / "config.yaml")
    write_split_csv(prepared.split, prepared.run_dir / "split.csv")


# -- fitting ------------------------------------------------------------------------------------------------


def _accelerator(config: TrainConfig) -> str:
    if config.accelerator != "auto":
        return config.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def _module(prepared: Prepared) -> CellClassifierModule:
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
        bf16_frozen_stages=_bf16_frozen_stages(config),
    )


def _callbacks(prepared: Prepared, module: CellClassifierModule) -> list[Callback]:
    config, run_dir = prepared.config, prepared.run_dir
    mode = MONITORS[config.monitor]
    callbacks: list[Callback] = [
        History(run_dir / "history.csv"),
        Reseed(config.seed),
        LastPhaseEarlyStopping(
            first_epoch=module.hparams.frozen_epochs,
            monitor=config.monitor,
            mode=mode,
            patience=config.patience,
            check_on_train_epoch_end=True,
        ),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=config.monitor,
            mode=mode,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        # Lightning's save_last only writes when a top-k checkpoint was written, so "last" is its own callback.
        ModelCheckpoint(
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
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename=INTERVAL_CHECKPOINT,
                train_time_interval=timedelta(minutes=config.checkpoint_minutes),
                save_top_k=1,
                enable_version_counter=False,
            )
        )
    if config.progress:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar())
    return callbacks


def _logger(config: TrainConfig, run_dir: Path) -> Any:
    from lightning.pytorch import loggers

    try:
        if config.logger == "tensorboard":
            return loggers.TensorBoardLogger(run_dir, name="logs", version="")
        if config.logger == "mlflow":
            return loggers.MLFlowLogger(
                experiment_name="blastscope", run_name=run_dir.name, tracking_uri=f"file:{run_dir / 'mlruns'}"
            )
    except ModuleNotFoundError as error:
        raise BlastscopeError(
            f"the {config.logger} logger is not installed: pip install 'blastscope[loggers]'"
        ) from error
    return loggers.CSVLogger(run_dir, name="logs", version="")


def _strategy(config: TrainConfig) -> Any:
    """DDP that tolerates parameters without gradients: the frozen ones of phase 1 (all are registered, so the
    stages unfrozen in phase 2 are synchronised too)."""
    from lightning.pytorch.strategies import DDPStrategy

    several = config.num_nodes > 1 or str(config.devices) not in ("1", "auto")
    if config.strategy == "ddp" or (config.strategy == "auto" and several):
        return DDPStrategy(find_unused_parameters=True)
    return config.strategy


def _trainer(prepared: Prepared, module: CellClassifierModule) -> L.Trainer:
    config = prepared.config
    accelerator = _accelerator(config)
    if accelerator == "gpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return L.Trainer(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=_strategy(config),
        precision=_precision(config, accelerator),
        max_epochs=config.total_epochs,
        callbacks=_callbacks(prepared, module),
        logger=_logger(config, prepared.run_dir),
        deterministic=True if accelerator == "cpu" else "warn",
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1 if module.hparams.cached_features else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        default_root_dir=prepared.run_dir,
    )


def _fit(prepared: Prepared, resume_from: Path | None) -> Path:
    config, run_dir = prepared.config, prepared.run_dir
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP worker processes re-run the command and must join this run
    module = _module(prepared)
    datamodule = CellDataModule(
        prepared.split.parts,
        prepared.table.classes,
        prepared.bundle.preprocessing,
        config.augmentation,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
    )
    trainer = _trainer(prepared, module)
    datamodule.feature_extractor = lambda dataset: extract_features(
        module.model,
        dataset,
        batch_size=config.batch_size,
        autocast=trainer.precision_plugin.forward_context,
        channels_last=config.channels_last,
        num_workers=config.num_workers,
    )
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen batch-norm, on purpose
    started = time.perf_counter()
    try:
        with _fast_cpu_arithmetic():
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    if trainer.is_global_zero:
        history = next(cb for cb in trainer.callbacks if isinstance(cb, History))
        _write_metrics(prepared, datamodule, history, time.perf_counter() - started)
    return run_dir


@contextmanager
def _fast_cpu_arithmetic() -> Iterator[None]:
    """Two process-wide CPU settings for the length of a fit, both measured on this project's CPU.

    Deterministic mode also fills every new tensor with NaN, to expose reads of uninitialised memory: a fifth of each
    training step. The deterministic kernels themselves stay on. And denormal floats, which fine-tuned ImageNet
    weights produce, are flushed to zero instead of taking the CPU's slow path (a tenth of each step).
    """
    fill_uninitialized = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized
        if flushing:
            torch.set_flush_denormal(False)


def _write_metrics(prepared: Prepared, datamodule: CellDataModule, history: History, fit_seconds: float) -> None:
    """Score the best checkpoint on the test split and record speed and data problems next to it."""
    from blastscope.inference.predict import predict_proba
    from blastscope.metrics import classification_metrics

    run_dir, table = prepared.run_dir, prepared.table
    test_cells = datamodule.dataset("test", augment=False).cells if prepared.split.parts.get("test") else []
    model = load_network_weights(prepared.bundle.model, checkpoint_path(run_dir, "best")).eval()
    metrics: dict[str, Any] = {"model": prepared.config.model, "checkpoint": "best"}
    if test_cells:
        probabilities = predict_proba(
            model,
            prepared.bundle.preprocessing,
            test_cells,
            batch_size=prepared.config.batch_size,
            cache=datamodule.cache,
            transform=run_eval_transform(prepared.bundle.preprocessing, prepared.config.to_dict()),
        )
        labels = [table.class_index(cell.label) for cell in test_cells]
        metrics["test"] = classification_metrics(labels, probabilities, table.classes)
    else:
        metrics["test"] = None
    metrics["training"] = {
        "epochs_run": len(history.rows),
        "train_seconds": round(history.train_seconds, 3),
        "fit_seconds_this_process": round(fit_seconds, 3),
        "images_seen": history.images_seen,
        "images_per_second": round(history.images_seen / history.train_seconds, 2) if history.train_seconds else None,
    }
    metrics["data"] = {
        "cells": len(table.cells),
        "parts": {part: len(cells) for part, cells in prepared.split.parts.items()},
        "skipped_files": len(_all_skipped(table, datamodule)),
        "skipped": [[str(path), reason] for path, reason in _all_skipped(table, datamodule)[:100]],
        "duplicates": len(table.duplicates),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))


def _all_skipped(table: CellTable, datamodule: CellDataModule) -> list[tuple[Path, str]]:
    """Files set aside while scanning plus cells that could not be decoded when their part was loaded."""
    return [*table.skipped, *(item for found in datamodule.skipped.values() for item in found)]


def _bf16_frozen_stages(config: TrainConfig) -> bool:
    return config.bf16_frozen_stages and _accelerator(config) == "cpu" and cpu_has_native_bf16()


def _precision(config: TrainConfig, accelerator: str) -> str:
    return resolve_precision(config.precision, accelerator, get_spec(config.model).cpu_bf16_training)
