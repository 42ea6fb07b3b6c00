"""A run trained with a crop and stain input channels records them, and every inference door applies them:
``blastscope.load`` on PyTorch and on the ONNX export give what an independent re-implementation of the recorded
preprocessing gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blastscope.api import load
from blastscope.export.onnx import export_run
from blastscope.runs import load_run
from blastscope.training import TrainConfig, train

CROP, CHANNELS = 0.75, "od"


def by_hand(paths: list[Path], run_dir: Path, crop: float) -> np.ndarray:
    """Probabilities from the recorded preprocessing, written out: centred window, resize, optical density with the
    canvas at 0, scale, mean/std, then the network and the temperature."""
    trained = load_run(run_dir)
    pre, point = trained.preprocessing, trained.operating_point
    inputs = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        side = round(crop * min(rgb.shape[:2]))
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        window = Image.fromarray(rgb[top : top + side, left : left + side])
        resample = Image.Resampling[pre.interpolation.upper()]
        pixels = np.asarray(window.resize((pre.input_size,) * 2, resample)).astype(np.float64)
        density = -np.log((pixels + 1) / 256) / np.log(256)
        density[pixels.max(axis=2) < 12] = 0.0
        inputs.append((density - np.array(pre.mean)) / np.array(pre.std))
    batch = torch.from_numpy(np.stack(inputs).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.softmax(trained.model(batch) / point.temperature, dim=1).numpy()


@pytest.fixture(scope="module")
def cropped_od_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of the small cnn at 32 px, as ``tiny_cnn_run``, with ``--crop-fraction 0.75 --channels od``: it exports
    in seconds, efficientnet_lite0 in 20-30 s."""
    config = TrainConfig(
        data=str(synth_small),
        model="cnn",
        pretrained="none",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        batch_size=16,
        num_workers=0,
        crop_fraction=CROP,
        channels=CHANNELS,
        out=str(tmp_path_factory.mktemp("runs")),
        progress=False,
    )
    return Path(train(config))


def test_the_run_records_its_crop_and_channels(cropped_od_run: Path) -> None:
    pre = load_run(cropped_od_run).preprocessing
    assert (pre.crop_fraction, pre.channels, pre.interpolation) == (CROP, CHANNELS, "bilinear")


def test_torch_and_onnx_doors_apply_the_runs_crop_and_channels(cropped_od_run: Path, cell_images: list[Path]) -> None:
    paths = cell_images[:4]
    expected = by_hand(paths, cropped_od_run, CROP)
    torch_door = load(cropped_od_run, backend="torch").predict_proba(paths)
    np.testing.assert_allclose(torch_door, expected, atol=1e-4)
    assert not np.allclose(torch_door, by_hand(paths, cropped_od_run, 1.0), atol=1e-4), "the crop changed nothing"
    export_run(load_run(cropped_od_run), log=lambda _: None)
    np.testing.assert_allclose(load(cropped_od_run, backend="onnx").predict_proba(paths), expected, atol=1e-4)
