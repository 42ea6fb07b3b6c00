"""The Lightning trainer a recipe asks for: where the frozen stages run in bf16."""

from __future__ import annotations

import pytest

from blastscope.training import TrainConfig


def test_frozen_stages_run_in_bf16_only_on_cpus_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu", bf16_frozen_stages=False))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="gpu"))
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))
