"""Preparing a training run: what the data scan found is said before training starts."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from blastscope.training import TrainConfig
from blastscope.training.prepare import complete_recipe, scan_data


def test_the_scan_notes_are_said_when_training_starts(
    synth_small: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """A class folder holding only GIFs is no class: ``train`` says so, as ``data inspect`` does."""
    data = tmp_path / "data"
    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        label = "blast" if source.stem.endswith("_all") else "normal"
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, data / label / f"cell{index}.png")
    (data / "mono").mkdir()
    (data / "mono" / "cell.gif").write_bytes(b"GIF89a")
    with caplog.at_level(logging.WARNING, logger="blastscope.training.prepare"):
        scan_data(complete_recipe(tiny_config(data=str(data))))
    said = [record.getMessage() for record in caplog.records]
    assert "note: not a class: mono/ holds no readable image" in said
    assert any(line.startswith("note: 1 file of another type passed over (.gif 1)") for line in said)
