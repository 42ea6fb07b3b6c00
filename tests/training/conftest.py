"""Fixtures of the training tests: a tiny synthetic dataset and one CPU thread (the test machine is shared)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from blastscope.training import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Two threads on a busy 2-core machine spin against each other; one is several times faster there."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic 32-px cells, 4 per subject, 5 subjects per class: enough for a subject-level 60/20/20 split."""
    from blastscope.data.synth import synthesize

    out = tmp_path_factory.mktemp("tiny-cells")
    synthesize(out, subjects_per_class=5, cells_per_subject=4, image_size=32, seed=0)
    return out


@pytest.fixture
def tiny_config(tiny_cells: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """Recipes that train in seconds: 32 px, batch 4, one epoch per phase, no workers, no progress bars."""
    return lambda **changes: _tiny_config(**{"data": str(tiny_cells), "out": str(tmp_path / "runs"), **changes})


def _tiny_config(**changes: object) -> TrainConfig:
    recipe = {
        "model": "efficientnet_lite0",
        "image_size": 32,
        "epochs_frozen": 1,
        "epochs_finetune": 1,
        "batch_size": 4,
        "num_workers": 0,
        "progress": False,
    }
    return TrainConfig(**{**recipe, **changes})  # type: ignore[arg-type]
