"""``train(config)``: scan, split, build, fit in two phases on Lightning, then score the test split."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from blastscope.data.classes import positive_class, positive_class_line
from blastscope.data.datamodule import CellDataModule
from blastscope.data.split import Split, SplitContentsMissing, read_split_csv
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError, DataError
from blastscope.inference.decision import decide, temperature_bound_warning
from blastscope.inference.predict import predict_logits, probabilities
from blastscope.inference.runners import TorchRunner
from blastscope.metrics import class_display_name, classification_metrics
from blastscope.models import ModelBundle
from blastscope.runs.ensemble import ENSEMBLE
from blastscope.runs.folder import (
    RUN_DIR_ENV,
    checkpoint_path,
    copy_network_weights,
    finished,
    new_run_dir,
    read_checkpoint,
    read_config,
    read_operating_point,
)
from blastscope.runs.trained import run_eval_transform
from blastscope.storage import write_text_atomically
from blastscope.training.callbacks import History
from blastscope.training.checkpoints import ensure_writable, remove_partial_writes, storage_errors
from blastscope.training.config import TrainConfig
from blastscope.training.features import extract_features
from blastscope.training.module import CellClassifierModule, check_head_fit
from blastscope.training.prepare import (
    Prepared,
    build_model,
    complete_recipe,
    make_run_split,
    resolve_positive_class,
    scan_data,
    unused_flags_line,
    write_run_files,
)
from blastscope.training.trainer import (
    INTERVAL_CHECKPOINT,
    build_module,
    build_trainer,
    resolve_accelerator,
    training_precision,
)


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C while Lightning was fitting, which has already said so on a line of its own."""


def train(
    config: TrainConfig, run_dir: Path | None = None, *, announce: bool = True, repeating: Path | None = None
) -> Path:
    """Train a new run from ``config``; returns the run directory.

    The data and a ``--split-csv`` are recorded by their absolute paths, so the recipe names the same files wherever
    it is re-run or resumed from. ``announce=False`` leaves out the positive-class line, for callers (``compare``)
    that said it once for all runs. ``repeating`` is the config.yaml the recipe was read from (``--config``): when
    the run beside it trained on other cells than this split holds, a warning line names both data paths (new data
    for the same recipe may be meant, so it is not refused).

    Raises
    ------
    BlastscopeError
        Before any work if the output folder cannot be written; during training if the disk fills up or turns
        read-only (the finished epochs stay in the run's checkpoints).
    """
    as_given, config = config, complete_recipe(config.with_absolute_paths())
    worker = RUN_DIR_ENV in os.environ  # a DDP worker process: its launcher made the run directory
    if run_dir is not None and not worker and (Path(run_dir) / "config.yaml").exists():
        raise BlastscopeError(f"{run_dir} already holds a run: continue it with --resume or choose another --run-dir")
    if not worker:
        ensure_writable(Path(run_dir) if run_dir is not None else Path(config.out))
    L.seed_everything(config.seed, workers=True, verbose=False)
    table = scan_data(config)
    given = config.positive_class is not None
    config, positive = resolve_positive_class(config, table)  # before anything is written: unclear names stop here
    if announce and not worker:
        _announce(positive_class_line(positive, table.classes, "given" if given else "name", class_display_name))
    split = make_run_split(config, table)
    if repeating is not None and not worker and (line := other_cells_line(Path(repeating), split, str(config.data))):
        _announce(line)
    bundle = build_model(config, table)
    check_head_fit(  # before the run folder is made: the weights decide whether it can be fitted
        config.head_fit,
        bundle.model,
        pretrained=bool(bundle.pretrained),
        frozen_epochs=config.epochs_frozen,
        cached=config.cached_features,
        model_name=config.model,
    )
    recorded = yaml.safe_load(Path(repeating).read_text()) if repeating is not None else None
    if not worker and (line := unused_flags_line(as_given, config, bundle.pretrained, recorded)):
        _announce(line)
    with storage_errors(Path(run_dir) if run_dir is not None else Path(config.out)):
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(Path(config.out), config.model)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        prepared = Prepared(config, table, split, bundle, run_dir, positive)
        if not worker:
            write_run_files(prepared, training_precision(config, resolve_accelerator(config)))
    return _fit(prepared, resume_from=None)


def resume(run_dir: Path, *, progress: bool | None = None, announce: bool = True) -> Path:
    """Continue a run from its latest checkpoint, epoch-end or mid-epoch (from scratch if none was written yet).

    The run folder may have been moved or renamed since: checkpoints keep no paths that matter. The data must still
    hold the images split.csv records, byte for byte: they are found by their digests there (so the dataset may have
    moved, and ``data:`` in config.yaml may be set to where it is now), which checks runs recorded before
    ``split_content_hash`` existed as well. A run that finished (:func:`finished`) is left as it is: there is nothing
    to resume, and fitting again from its last checkpoint would only rewrite its metrics.json. ``progress`` overrides
    the recorded progress bars (display only: the run ends the same either way); ``announce`` as for :func:`train`.
    """
    run_dir = Path(run_dir)
    recorded = read_config(run_dir)
    if recorded.get("model") == ENSEMBLE:
        raise BlastscopeError(
            f"{run_dir} is an ensemble (`blastscope ensemble`): it is not trained; resume or retrain its member runs, "
            "then make the ensemble again"
        )
    if finished(run_dir):
        if announce and RUN_DIR_ENV not in os.environ:
            _announce(f"{run_dir} finished training already (its metrics.json is written): nothing to resume")
        return run_dir
    if RUN_DIR_ENV not in os.environ:
        ensure_writable(run_dir / "checkpoints", run_dir)
        for folder in (run_dir, run_dir / "checkpoints"):
            remove_partial_writes(folder)
    config = complete_recipe(TrainConfig.from_dict(recorded))
    if progress is not None:
        config = replace(config, progress=progress)
    if not Path(str(config.data)).exists():
        raise DataError(_data_not_found(run_dir, str(config.data)))
    L.seed_everything(config.seed, workers=True, verbose=False)
    table = scan_data(config)
    if "classes" in recorded and list(table.classes) != list(recorded["classes"]):
        raise DataError(
            f"{run_dir}: the data at {config.data} now has classes {list(table.classes)}, the run was trained on "
            f"{list(recorded['classes'])}; restore the data or start a new run"
        )
    if "resolved_positive_class" in recorded:
        recorded_positive = recorded["resolved_positive_class"]
    else:  # a run written before the positive class was recorded: the one its stored operating point decides on
        recorded_positive = read_operating_point(run_dir, table.classes).positive_class
    positive = positive_class(table.classes, recorded_positive)
    if announce and RUN_DIR_ENV not in os.environ:
        _announce(positive_class_line(positive, table.classes, "recorded", class_display_name))
    try:  # cells are found by digest: a file that now holds other bytes is not found
        split = read_split_csv(run_dir / "split.csv", table)
    except SplitContentsMissing as missing:
        raise DataError(
            f"{run_dir}: {missing.count} of the {missing.rows} images in its split.csv are not in {config.data} with "
            f"the contents the run trained on, e.g. {missing.first} (changed, redrawn or removed since); restore them, "
            "or train a new run on the data as it is"
        ) from missing
    split.subject_level = split.subject_level and bool(recorded.get("split_subject_level", True))  # weights' leak
    if "split_hash" in recorded and split.hash != recorded["split_hash"]:
        raise DataError(
            f"{run_dir}: split.csv no longer matches the split the run was trained on (hash {split.hash} != "
            f"{recorded['split_hash']}); restore it or start a new run"
        )
    checkpoint, step = latest_checkpoint(run_dir) or (None, 0)
    if checkpoint is None and announce and RUN_DIR_ENV not in os.environ:  # else it reads as continuing unsaid
        _announce(f"{run_dir}: no checkpoint was written before it stopped, so training starts from the first epoch")
    bundle = _resumed_model(config, table, recorded, run_dir, from_checkpoint=checkpoint is not None)
    prepared = Prepared(config, table, split, bundle, run_dir, positive)
    return _fit(prepared, resume_from=checkpoint, logs=f"resumed-at-step-{step}")


def _data_not_found(run_dir: Path, data: str) -> str:
    """Where a resumed run's recorded data is not, and how to point the run at it: a relative path (recorded before
    runs recorded absolute ones) means something only in the folder the run was started in."""
    config = run_dir / "config.yaml"
    where = f"{run_dir}: the data it trained on is not at {Path(data).resolve()}"
    if not Path(data).is_absolute():
        return (
            f"{where} ({config} records it as {data!r}, relative to the folder the run was started in): resume from "
            f"that folder, or set data: in {config} to the data's absolute path (its cells are found by their contents)"
        )
    return (
        f"{where} (moved or removed since?): restore it, or set data: in {config} to where it is now (its cells are "
        "found by their contents)"
    )


def other_cells_line(config_file: Path, split: Split, data: str) -> str | None:
    """The warning that a recipe re-run from ``config_file`` trains on other cells than the run it was read from.

    The run's cells are the content digests in the split.csv beside ``config_file``; none is said without a readable
    one (a recipe kept on its own). Seeds, ratios and folds may change with flags and still draw from the same cells,
    so only which cells there are is compared, not how they were split.
    """
    try:
        before = {cell.digest for _, cell in read_split_csv(config_file.parent / "split.csv").cells()}
        recorded = TrainConfig.load(config_file).data
    except BlastscopeError:
        return None
    now = {cell.digest for _, cell in split.cells()}
    if now == before:
        return None
    relative = recorded is not None and not Path(recorded).is_absolute()
    return (
        f"warning: {data} holds other cells than the run of {config_file} trained on from {recorded}"
        f"{' (relative to the folder that run was started in)' if relative else ''}: {len(now)} cells here, "
        f"{len(now & before)} of them among its {len(before)} (fine for the same recipe on new data; to repeat that "
        "run, pass --data with its data)"
    )


def _announce(line: str) -> None:
    """A line for the person at the terminal, on stderr: stdout carries only the run directory at the end."""
    print(line, file=sys.stderr, flush=True)


def _resumed_model(
    config: TrainConfig, table: CellTable, recorded: dict[str, Any], run_dir: Path, from_checkpoint: bool
) -> ModelBundle:
    """The run's network as recorded in config.yaml, not as its ``pretrained`` request would resolve today.

    With a checkpoint the weights come from it, so the network is built without weights (no hub access, no weights
    file needed) and its pretrained-ness, which sets the phase schedule, is taken from ``weights_pretrained``. Without
    one the weights are fetched again and must resolve as they did.
    """
    if not from_checkpoint:
        bundle = build_model(config, table)
        if "weights_pretrained" in recorded and bool(bundle.pretrained) != bool(recorded["weights_pretrained"]):
            raise BlastscopeError(
                f"{run_dir}: pretrained={config.pretrained} now gives {bundle.weights_source}, the run started from "
                f"{recorded.get('weights_source')}; make those weights available again or start a new run"
            )
        return bundle
    bundle = build_model(replace(config, pretrained="none"), table)
    bundle.pretrained = bool(recorded.get("weights_pretrained", bundle.pretrained))
    bundle.weights_source = str(recorded.get("weights_source", bundle.weights_source))
    return bundle


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The furthest-trained of the epoch-end ``last.ckpt`` and the mid-epoch ``interval.ckpt`` with its global
    step, if any exists."""
    candidates = [run_dir / "checkpoints" / f"{name}.ckpt" for name in ("last", INTERVAL_CHECKPOINT)]
    steps = {path: _global_step(path) for path in candidates if path.is_file()}
    return max(steps.items(), key=lambda item: item[1]) if steps else None


def _global_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception as error:  # checkpoints are written atomically, so this is a foreign or damaged file
        raise BlastscopeError(
            f"{path}: unreadable checkpoint ({error}); delete it to resume from the other one"
        ) from error


def _fit(prepared: Prepared, resume_from: Path | None, logs: str = "") -> Path:
    """Fit from scratch or from the checkpoint ``resume_from``, logging as
    :func:`~blastscope.training.trainer.build_logger` says, then score the test split into metrics.json."""
    config, run_dir = prepared.config, prepared.run_dir
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP worker processes re-run the command and must join this run
    module = build_module(prepared)
    datamodule = CellDataModule(
        prepared.split.parts,
        prepared.table.classes,
        prepared.bundle.preprocessing,
        config.augmentation,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
        balance_classes=config.class_balance == "sampler",
    )
    trainer = build_trainer(prepared, module, logs)
    datamodule.feature_extractor = lambda dataset: extract_features(
        module.model,
        dataset,
        batch_size=config.batch_size,
        autocast=trainer.precision_plugin.forward_context,
        channels_last=config.channels_last,
        num_workers=config.num_workers,
    )
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen batch-norm, on purpose
    # Lightning's pytree helper uses torch's LeafSpec, deprecated in torch 2.14; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    started = time.perf_counter()
    with storage_errors(run_dir, run_dir), warnings.catch_warnings():
        if resume_from is not None:  # a resume continues the run's own checkpoints there: nothing to warn about
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .+ exists and is not empty\.$")
        try:
            with _fast_cpu_arithmetic():
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1) after its checkpoint-safe shutdown
                raise FitInterrupted from None
            raise
        except Exception as error:
            if _raised_handling_ctrl_c(error):  # e.g. a RuntimeError of the data loaders' shutdown after Ctrl-C
                raise FitInterrupted from None
            raise
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
        if trainer.is_global_zero:
            history = next(cb for cb in trainer.callbacks if isinstance(cb, History))
            _write_metrics(prepared, datamodule, module, history, time.perf_counter() - started)
            # finished now: the mid-epoch checkpoint served only a resume, which a finished run no longer takes
            (run_dir / "checkpoints" / f"{INTERVAL_CHECKPOINT}.ckpt").unlink(missing_ok=True)
    return run_dir


def _raised_handling_ctrl_c(error: BaseException) -> bool:
    """Whether ``error`` was raised while a Ctrl-C (``KeyboardInterrupt``) was being handled: Lightning marks a trainer
    interrupted after any exception, so only the exception's context tells a Ctrl-C from a failure."""
    context = error.__context__
    while context is not None:
        if isinstance(context, KeyboardInterrupt):
            return True
        context = context.__context__
    return False


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


def _write_metrics(
    prepared: Prepared,
    datamodule: CellDataModule,
    module: CellClassifierModule,
    history: History,
    fit_seconds: float,
) -> None:
    """Score the best checkpoint on the test split, through the inference core at the run's operating point (as
    ``blastscope evaluate`` would), and record speed, a closed-form head fit's choice and data problems next to it."""
    run_dir, table = prepared.run_dir, prepared.table
    for part in ("train", "val"):  # read by fitting, yet not val by a resume with no epoch left (stopped scoring)
        if prepared.split.parts.get(part) and part not in datamodule.segmented:
            datamodule.dataset(part, augment=False)
    test_cells = datamodule.dataset("test", augment=False).cells if prepared.split.parts.get("test") else []
    best = checkpoint_path(run_dir, "best")
    checkpoint = read_checkpoint(best)
    model = copy_network_weights(prepared.bundle.model, checkpoint, best).eval()
    point = read_operating_point(run_dir, tuple(table.classes), prepared.positive_class)
    metrics: dict[str, Any] = {"model": prepared.config.model, "checkpoint": "best", "operating_point": point.to_dict()}
    if test_cells:
        pre = prepared.bundle.preprocessing
        logits = predict_logits(
            TorchRunner(model),
            test_cells,
            pre,
            run_eval_transform(pre, prepared.config.to_dict()),
            batch_size=prepared.config.batch_size,
            cache=datamodule.cache,
        )
        y_prob = probabilities(logits, point.temperature)
        labels = [table.class_index(cell.label) for cell in test_cells]
        metrics["test"] = classification_metrics(
            labels, y_prob, decide(y_prob, point), table.classes, point.positive_class, point.threshold
        )
    else:
        metrics["test"] = None
    metrics["training"] = {
        "epochs_run": len(history.rows),
        "train_seconds": round(history.train_seconds, 3),
        "fit_seconds_this_process": round(fit_seconds, 3),
        "images_seen": history.images_seen,
        "images_per_second": round(history.images_seen / history.train_seconds, 2) if history.train_seconds else None,
        **_scored_epoch(int(checkpoint["epoch"]), history),
    }
    if module.head_fit_record is not None:
        metrics["training"]["head_fit"] = module.head_fit_record
    if (temperatures := model.member_temperatures()) is not None:
        metrics["training"]["member_temperatures"] = list(temperatures)
        for number, temperature in enumerate(temperatures, start=1):
            if warning := temperature_bound_warning(temperature, len(prepared.split.parts.get("val", []))):
                _announce(f"warning: head member {number} of {len(temperatures)}: {warning}")
    metrics["data"] = {
        "subject_level": bool(prepared.split.subject_level),  # False: test people may have trained, scores optimistic
        "cells": len(table.cells),
        "parts": {part: len(cells) for part, cells in prepared.split.parts.items()},
        "left_out": len(prepared.split.left_out),  # cells of the data a --split-csv puts in no part
        "skipped_files": len(_all_skipped(table, datamodule)),
        "skipped": [[str(path), reason] for path, reason in _all_skipped(table, datamodule)[:100]],
        "duplicates": len(table.duplicates),
        "segmented": {part: {"cut_out": cut, "cells": read} for part, (cut, read) in datamodule.segmented.items()},
    }
    write_text_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2))


def _scored_epoch(checkpoint_epoch: int, history: History) -> dict[str, Any]:
    """The epoch (1-based, as in history.csv) and phase of the checkpoint the run is scored with, whose own (0-based)
    ``epoch`` is ``checkpoint_epoch``: the best by ``--monitor`` over all phases, so a run asked to fine-tune may be
    scored with its frozen phase's head."""
    epoch = checkpoint_epoch + 1
    phase = next((row["phase"] for row in history.rows if row["epoch"] == epoch), None)
    return {"best_epoch": epoch, "best_phase": phase}


def _all_skipped(table: CellTable, datamodule: CellDataModule) -> list[tuple[Path, str]]:
    """Files set aside while scanning plus cells that could not be decoded when their part was loaded."""
    return [*table.skipped, *(item for found in datamodule.skipped.values() for item in found)]
