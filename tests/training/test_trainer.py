"""The Lightning trainer a recipe asks for: where and in which dtype the frozen stages run as folded copies."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from blastscope.training import TrainConfig, train


def test_frozen_stages_run_folded_on_cpus_in_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.frozen_stage_dtype(TrainConfig(accelerator="cpu")) == "bfloat16"
    assert trainer.frozen_stage_dtype(TrainConfig(accelerator="cpu", folded_frozen_stages=False)) is None
    assert trainer.frozen_stage_dtype(TrainConfig(accelerator="gpu")) is None
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.frozen_stage_dtype(TrainConfig(accelerator="cpu")) == "float32"


def test_lightning_product_tips_are_left_out_and_its_hardware_lines_said_once(
    tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """compare and --cv fit one Trainer per model or fold; each printed the same "GPU available" lines again."""
    with caplog.at_level("INFO", logger="lightning.pytorch"):
        train(tiny_config(epochs_finetune=0))
        train(tiny_config(epochs_finetune=0))
    said = [record.getMessage() for record in caplog.records]
    assert sum(line.startswith("GPU available") for line in said) <= 1  # 0 when an earlier test in this process fit
    assert not any("Tip" in line for line in said)


def test_the_lightning_filter_keeps_each_hardware_line_once_and_every_other_line() -> None:
    from blastscope.training.trainer import LightningLines

    lines = LightningLines()

    def kept(message: str) -> bool:
        return lines.filter(logging.LogRecord("lightning", logging.INFO, __file__, 1, message, None, None))

    assert [kept("GPU available: False, used: False") for _ in range(2)] == [True, False]
    assert kept("GPU available: True (cuda), used: True")  # another machine state is news
    assert not kept("💡 Tip: try the cloud")
    assert [kept("`Trainer.fit` stopped: `max_epochs=1` reached.") for _ in range(2)] == [True, True]


def test_early_stopping_watches_the_frozen_phase_when_it_is_the_only_one(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    """The default recipe trains the head alone (no fine-tuning): early stopping waited for a phase that never came,
    so every run trained all its epochs."""
    run = Path(train(tiny_config(pretrained="auto", epochs_frozen=8, epochs_finetune=0, patience=1, lr_head=1e-30)))
    epochs = list(csv.DictReader((run / "history.csv").open()))
    assert len(epochs) == 2  # nothing learns: epoch 1 sets the best, epoch 2 fails to beat it, and it stops


def test_progress_bars_go_to_stderr_so_stdout_holds_only_what_scripts_read(
    tiny_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    """`RUN=$(blastscope train ...)` captured Lightning's bars before the run folder."""
    train(tiny_config(progress=True, epochs_finetune=0))
    out, err = capsys.readouterr()
    assert "Epoch 0" not in out and "it/s" not in out and "Epoch 0" in err
