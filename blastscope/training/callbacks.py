"""Callbacks of a blastscope run: history.csv, per-batch reseeding, phase-aware early stopping, progress bars on
stderr."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from blastscope.data.datamodule import BATCH_TAG, derived_seed
from blastscope.storage import write_text_atomically

HISTORY_COLUMNS = (
    "epoch",
    "phase",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_weighted_f1",
    "lr",
    "epoch_seconds",
)


class History(L.Callback):
    """One row per finished epoch in ``history.csv``; the rows live in the checkpoint so a resumed run rewrites them.

    An epoch's seconds run from the end of the previous epoch (or the start of fitting), so they include dataloader
    start-up and phase-1 feature extraction.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.images_seen = 0
        self.train_seconds = 0.0
        self._mark = 0.0
        self._lr = math.nan

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()
        if trainer.is_global_zero:
            self._write()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])  # the head's rate this epoch

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images_seen += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        seconds, self._mark = now - self._mark, now
        self.train_seconds += seconds
        metrics = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch + 1,
            "phase": pl_module.phase(trainer.current_epoch),
            **{name: _number(metrics.get(name)) for name in HISTORY_COLUMNS[2:6]},
            "lr": self._lr,
            "epoch_seconds": round(seconds, 3),
        }
        self.rows.append(row)
        if trainer.is_global_zero:
            self._write()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "images_seen": self.images_seen, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.images_seen = int(state_dict["images_seen"])
        self.train_seconds = float(state_dict["train_seconds"])

    def _write(self) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomically(self.path, text.getvalue())


def _number(value: torch.Tensor | float | None) -> float:
    return math.nan if value is None else round(float(value), 6)


class Reseed(L.Callback):
    """Seeds the main process's RNGs from (seed, epoch, batch, rank) before every training batch.

    Dropout and stochastic depth then draw the same numbers whether or not the run was interrupted and resumed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(derived_seed(BATCH_TAG, self.seed, trainer.current_epoch, batch_idx, trainer.global_rank))


class LastPhaseEarlyStopping(EarlyStopping):
    """Early stopping that only watches the last phase: a plateau of the frozen phase must not cancel fine-tuning."""

    def __init__(self, first_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_epoch = first_epoch

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super()._run_early_stopping_check(trainer)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, written to stderr: stdout holds only what scripts read (``train`` prints the run folder,
    ``RUN=$(blastscope train ...)``), and Lightning's bars write to stdout."""

    def init_sanity_tqdm(self) -> Tqdm:
        return _on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Tqdm:
        return _on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Tqdm:
        return _on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Tqdm:
        return _on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Tqdm:
        return _on_stderr(super().init_predict_tqdm)


def _on_stderr(make_bar: Callable[[], Tqdm]) -> Tqdm:
    """The bar ``make_bar`` makes, on stderr: Lightning passes ``file=sys.stdout``, read when each bar is made."""
    with redirect_stdout(sys.stderr):
        return make_bar()
