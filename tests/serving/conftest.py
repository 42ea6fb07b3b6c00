"""A real tiny trained run (1 epoch, 32 px, synthetic cells) and an ONNX-exported copy of it, shared by the session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def train_tiny_run(data: Path, out: Path) -> Path:
    """One frozen-backbone epoch of efficientnet_lite0 at 32 px: seconds on a CPU, yet every file a real run has."""
    from blastscope.training import TrainConfig, train

    config = TrainConfig(
        data=str(data),
        model="efficientnet_lite0",
        pretrained="none",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        batch_size=16,
        num_workers=0,
        out=str(out),
        progress=False,
    )
    return Path(train(config))


@pytest.fixture(scope="session")
def tiny_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(synth_small, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def exported_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_run`` exported with every variant (fp32, int8, bf16), so ``tiny_run`` stays PyTorch-only."""
    from blastscope.serving.onnx_export import export_run
    from blastscope.training import load_run

    run_dir = shutil.copytree(tiny_run, tmp_path_factory.mktemp("exported") / tiny_run.name)
    export_run(load_run(run_dir), int8=True, bf16=True, log=lambda _: None)
    return run_dir


@pytest.fixture(scope="session")
def cell_images(synth_small: Path) -> list[Path]:
    """A few cell images of each class from the synthetic dataset."""
    files = sorted(synth_small.rglob("*.png"))
    return [path for label in ("all", "hem") for path in files if path.parent.name == label][::16]
