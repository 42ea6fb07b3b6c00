"""Training on real C-NMC 2019 cells (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from blastscope.runs import load_run
from blastscope.training import TrainConfig, train


@pytest.mark.integration
def test_a_run_on_the_cnmc_sample_splits_by_subject(cnmc_sample: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    run_dir = train(tiny_config(data=str(cnmc_sample), image_size=64, epochs_finetune=0))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["classes"] == ["hem", "all"] and config["split_subject_level"] is True
    split = load_run(run_dir).split
    subjects = {part: {cell.subject for cell in cells} for part, cells in split.parts.items()}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"])
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["n"] == len(split.parts["test"])
