"""Fixtures of the training tests: recipes that train in seconds on the suite's ``synth_small`` cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from blastscope.training import TrainConfig


@pytest.fixture
def stopped_run(tiny_run_copy: Path) -> Path:
    """A copy of ``tiny_run`` as a run stopped after its last checkpoint but before its metrics.json (while scoring
    the test split): trained to the end yet unfinished, so ``resume`` does the rest."""
    (tiny_run_copy / "metrics.json").unlink()
    return tiny_run_copy


@pytest.fixture
def tiny_config(synth_small: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """Recipes that train in seconds: 32 px, batch 8, one epoch per phase, no workers, no progress bars."""
    return lambda **changes: _tiny_config(**{"data": str(synth_small), "out": str(tmp_path / "runs"), **changes})


def _tiny_config(**changes: object) -> TrainConfig:
    recipe = {
        "model": "efficientnet_lite0",
        "image_size": 32,
        "epochs_frozen": 1,
        "epochs_finetune": 1,
        "batch_size": 8,
        "num_workers": 0,
        "progress": False,
    }
    return TrainConfig(**{**recipe, **changes})  # type: ignore[arg-type]
