"""The network's cell measurements against scikit-image's, the reference the benchmark measured them with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.color import rgb2hed, rgb2lab
from skimage.measure import regionprops
from skimage.morphology import disk

from blastscope.data.images import read_rgb
from blastscope.models.measurements import (
    CELL_LEVEL,
    EDGE_PX,
    MIN_INNER_PX,
    NAMES,
    CellMeasurements,
    colour_step,
)
from blastscope.segmentation.background import cell_on_black_mask


def reference(rgb: np.ndarray) -> np.ndarray:
    """The 67 measurements by scikit-image and numpy, in the order of ``NAMES``: colour on every ``step``-th pixel."""
    mask = cell_on_black_mask(rgb)
    step = colour_step(*rgb.shape[:2])
    grid = (slice(None, None, step), slice(None, None, step))
    inner = ndimage.binary_erosion(mask, disk(EDGE_PX))[grid]
    inner = inner if inner.sum() >= MIN_INNER_PX / step**2 else mask[grid]
    region = regionprops(mask.astype(np.uint8))[0]
    hed, lab = rgb2hed(rgb)[grid], rgb2lab(rgb)[grid]
    rgb_channels = rgb[grid].astype(float).transpose(2, 0, 1)
    channels = [hed[..., 0], hed[..., 1], lab[..., 0], lab[..., 1], lab[..., 2], *rgb_channels]
    found = [float(region.area), region.axis_major_length, region.axis_minor_length]
    for channel in channels:
        values = channel[inner]
        p5, p25, p50, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95])
        found += [values.mean(), values.std(), p5, p25, p50, p75, p95, (p75 - p25) / (abs(p50) + 1e-6)]
    return np.array(found)


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def real_cells(cnmc_sample: Path) -> list[np.ndarray]:
    paths = sorted(cnmc_sample.rglob("*_all.*"))[:2] + sorted(cnmc_sample.rglob("*_hem.*"))[:2]
    return [np.asarray(read_rgb(path)) for path in paths]


def test_real_cells_measure_as_scikit_image_measures_them(real_cells: list[np.ndarray]) -> None:
    measured = CellMeasurements()(as_batch(*real_cells)).numpy()
    assert measured.shape == (len(real_cells), len(NAMES)) == (4, 67)
    for image, row in zip(real_cells, measured, strict=True):
        np.testing.assert_allclose(row, reference(image), rtol=1e-4, atol=1e-4)


def test_colour_is_read_on_a_grid_of_about_160_px_a_side() -> None:
    assert [colour_step(side, side) for side in (64, 160, 161, 320, 448, 450)] == [1, 1, 2, 2, 3, 3]
    assert colour_step(100, 450) == 3


def test_a_cell_measures_the_same_alone_and_beside_a_larger_one(real_cells: list[np.ndarray]) -> None:
    module = CellMeasurements()
    alone = module(as_batch(real_cells[2]))
    together = module(as_batch(real_cells[2], real_cells[0]))
    torch.testing.assert_close(together[:1], alone)


def test_an_ellipse_has_its_own_area_and_axes() -> None:
    rows, cols = np.mgrid[:200, :200]
    inside = ((rows - 100) / 60) ** 2 + ((cols - 100) / 30) ** 2 <= 1
    image = np.zeros((200, 200, 3), np.uint8)
    image[inside] = (150, 90, 170)
    area, major, minor = CellMeasurements()(as_batch(image))[0, :3].tolist()
    assert area == inside.sum() == pytest.approx(np.pi * 60 * 30, rel=0.01)
    assert (major, minor) == (pytest.approx(120, rel=0.01), pytest.approx(60, rel=0.01))


def test_near_black_pixels_inside_a_cell_are_not_part_of_it() -> None:
    image = np.zeros((120, 120, 3), np.uint8)
    image[20:100, 20:100] = (150, 90, 170)
    image[50:60, 50:60] = 3  # a hole that cell_on_black_mask would fill
    area = CellMeasurements()(as_batch(image))[0, 0].item()
    assert area == 80 * 80 - 10 * 10
    assert cell_on_black_mask(image).sum() == 80 * 80


def test_a_black_image_measures_zeros_not_nan() -> None:
    dark = np.full((64, 64, 3), int(CELL_LEVEL * 255) - 1, np.uint8)
    assert torch.equal(CellMeasurements()(as_batch(dark)), torch.zeros(1, len(NAMES)))


def test_it_exports_to_onnx_and_runs_there_as_in_torch(real_cells: list[np.ndarray], tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    module, batch = CellMeasurements().eval(), as_batch(*real_cells[:2])
    path = tmp_path / "measurements.onnx"
    torch.onnx.export(module, (batch,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {session.get_inputs()[0].name: as_batch(*real_cells[1:]).numpy()})
    np.testing.assert_allclose(exported, module(as_batch(*real_cells[1:])).numpy(), rtol=1e-4, atol=1e-3)


def test_bf16_autocast_does_not_round_the_measurements(real_cells: list[np.ndarray]) -> None:
    """Phase 1 may cache features under bf16 autocast: an area of 40,000 px would lose its last 2 digits in bf16."""
    module, batch = CellMeasurements(), as_batch(*real_cells[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        measured = module(batch)
    assert measured.dtype == torch.float32
    torch.testing.assert_close(measured, module(batch))
