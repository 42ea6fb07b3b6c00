"""A pretrained model learns the synthetic cells well above chance on held-out subjects."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from blastscope.training import TrainConfig, train


def test_efficientnet_lite0_learns_synthetic_cells(synth_small: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    run_dir = train(tiny_config(data=str(synth_small), image_size=64, batch_size=8, epochs_frozen=4, epochs_finetune=0))
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    with (run_dir / "history.csv").open() as handle:
        best_f1 = max(float(row["val_weighted_f1"]) for row in csv.DictReader(handle))
    assert test["roc_auc"] >= 0.85 and best_f1 >= 0.85  # chance is 0.5 for both
    assert test["n"] >= 16  # the test part: whole subjects the model never saw
