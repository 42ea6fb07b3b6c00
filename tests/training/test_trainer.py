"""The Lightning trainer a recipe asks for: where the frozen stages run in bf16."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from blastscope.training import TrainConfig, train


def test_frozen_stages_run_in_bf16_only_on_cpus_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu", bf16_frozen_stages=False))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="gpu"))
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))


def test_lightning_product_tips_are_left_out_and_its_other_lines_kept(
    tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="lightning.pytorch"):
        train(tiny_config(epochs_finetune=0))
    said = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("GPU available") for line in said)
    assert not any("Tip" in line for line in said)
