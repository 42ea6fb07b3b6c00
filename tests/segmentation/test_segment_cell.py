"""Segmenting one cell: a crop with natural background is cut out onto black; a cut-out on black is recognised and
only re-centred; no cell means found=False and a reason, never a blank canvas passed off as a cell."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from blastscope.data.synth import smear_field, synthesize
from blastscope.errors import BlastscopeError, ImageError
from blastscope.segmentation import is_on_black, segment_cell


def _crop_around(field, index: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``side`` px square of the field centred on white cell ``index``, and that cell's true mask in it."""
    ys, xs = np.nonzero(field.white_cells == index)
    cy, cx = int(ys.mean()), int(xs.mean())
    height, width = field.white_cells.shape
    top = min(max(0, cy - side // 2), height - side)
    left = min(max(0, cx - side // 2), width - side)
    window = (slice(top, top + side), slice(left, left + side))
    return field.image[window], field.white_cells[window] == index


@pytest.mark.parametrize("seed", range(8))
def test_crop_with_natural_background_is_cut_out(seed: int) -> None:
    field = smear_field(seed, height=320, width=320, white_cells=2, touching=False)
    crop, truth = _crop_around(field, 1, 180)
    cell = segment_cell(crop, red_cell_diameter=field.red_cell_diameter)
    assert cell.found, cell.reason
    assert not is_on_black(crop)
    predicted = cell.input_mask(truth.shape)
    assert (predicted & truth).sum() / (predicted | truth).sum() >= 0.85
    assert cell.canvas.shape == (450, 450, 3) and cell.mask.shape == (450, 450)
    assert (cell.canvas[~cell.mask] == 0).all() and cell.canvas[cell.mask].mean() > 50
    assert cell.mask.sum() == cell.box_mask.sum()  # same physical size: no zoom
    assert is_on_black(cell.canvas)


def test_cell_at_the_centre_is_chosen_over_a_larger_neighbour() -> None:
    field = smear_field(3, height=320, width=320, white_cells=2, touching=True)
    crop, truth = _crop_around(field, 2, 240)
    cell = segment_cell(crop, red_cell_diameter=field.red_cell_diameter)
    predicted = cell.input_mask(truth.shape)
    assert cell.found and (predicted & truth).sum() / (predicted | truth).sum() >= 0.8
    assert "other white cell" in cell.reason


def test_cnmc_like_cut_out_is_detected_as_on_black_and_recentred(tmp_path) -> None:
    synthesize(tmp_path, subjects_per_class=1, cells_per_subject=2, image_size=96, seed=0)
    for path in sorted(tmp_path.glob("training_data/*/*/*.png")):
        image = np.asarray(Image.open(path).convert("RGB"))
        assert is_on_black(image)
        shifted = np.zeros((160, 160, 3), np.uint8)
        shifted[5:101, 50:146] = image  # off-centre on a larger black canvas
        cell = segment_cell(shifted, canvas_size=128)
        assert cell.found and "already a cut-out on black" in cell.reason
        rows, cols = np.nonzero(cell.mask)
        assert abs((rows.min() + rows.max()) / 2 - 63.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 63.5) <= 1
        assert cell.mask.sum() == (image.max(axis=2) >= 12).sum() or cell.mask.sum() >= 0.95 * cell.box_mask.sum()


def test_smear_field_is_not_on_black() -> None:
    assert not is_on_black(smear_field(0).image)
    assert not is_on_black(np.full((64, 64, 3), 40, np.uint8))  # dark grey is not black


@pytest.mark.parametrize(
    "image",
    [
        np.full((200, 200, 3), 215, np.uint8),  # blank bright background
        smear_field(7, white_cells=0).image,  # red cells and platelets, no white cell
    ],
    ids=["blank", "no-white-cell"],
)
def test_no_cell_gives_found_false_with_a_reason(image: np.ndarray) -> None:
    cell = segment_cell(image)
    assert not cell.found and cell.box is None
    assert "no white cell found" in cell.reason
    assert not cell.canvas.any() and not cell.mask.any()


def test_black_image_gives_found_false() -> None:
    cell = segment_cell(np.zeros((100, 100, 3), np.uint8))
    assert not cell.found and "black" in cell.reason


def test_cell_larger_than_the_canvas_is_not_squeezed_in() -> None:
    field = smear_field(1, height=320, width=320, white_cells=1)
    crop, _ = _crop_around(field, 1, 200)
    cell = segment_cell(crop, canvas_size=48, red_cell_diameter=field.red_cell_diameter)
    assert not cell.found and "larger than the 48 px canvas" in cell.reason
    assert cell.box is not None  # the cell was found: it just does not fit
    smaller = segment_cell(crop, canvas_size=48, scale=0.25, red_cell_diameter=field.red_cell_diameter)
    assert smaller.found and smaller.scale == 0.25


def test_rgba_input_is_accepted_and_bad_input_raises() -> None:
    field = smear_field(1, height=320, width=320, white_cells=1)
    crop, _ = _crop_around(field, 1, 200)
    rgba = np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])
    assert segment_cell(rgba, red_cell_diameter=field.red_cell_diameter).found
    with pytest.raises(ImageError):
        segment_cell(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BlastscopeError):
        segment_cell(crop, scale=0)


@pytest.mark.integration
def test_real_cnmc_cells_are_on_black_and_kept_whole(cnmc_sample) -> None:
    paths = sorted(cnmc_sample.rglob("*.png"))
    assert paths
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        assert is_on_black(image), path
        cell = segment_cell(image)
        assert cell.found, path
        assert cell.mask.sum() >= 0.98 * (image.max(axis=2) >= 12).sum()


def test_tight_crops_keep_lobed_cells_whole() -> None:
    """Crops only ~15% wider than their cell, many with 2-3 nuclear lobes: the default scale adapts to the crop."""
    ious = []
    for seed in range(12):
        field = smear_field(seed, height=320, width=320, white_cells=1)
        ys, _ = np.nonzero(field.white_cells == 1)
        crop, truth = _crop_around(field, 1, int(1.15 * (ys.max() - ys.min())))
        cell = segment_cell(crop)
        predicted = cell.input_mask(truth.shape)
        ious.append((predicted & truth).sum() / (predicted | truth).sum() if cell.found else 0.0)
    assert np.median(ious) >= 0.9 and min(ious) >= 0.7, np.round(ious, 2)


MARGINS = (0, 10, 25, 50, 80, 120)


@pytest.mark.parametrize("seed", range(5))
def test_the_crop_margin_does_not_change_the_cell_cut_out(seed: int) -> None:
    """The same cell cropped 0-120 px around its box (no scale given) comes out the same, in field coordinates."""
    field = smear_field(seed, height=480, width=480, white_cells=1, touching=False)
    x0, y0, x1, y1 = field.boxes[0]
    masks = []
    for margin in MARGINS:
        top, left = max(0, y0 - margin), max(0, x0 - margin)
        crop = field.image[top : y1 + margin, left : x1 + margin]
        cell = segment_cell(crop)
        assert cell.found, (margin, cell.reason)
        mask = np.zeros(field.image.shape[:2], bool)
        mask[top : top + crop.shape[0], left : left + crop.shape[1]] = cell.input_mask(crop.shape)
        masks.append(mask)
    ious = [(mask & masks[-1]).sum() / (mask | masks[-1]).sum() for mask in masks]
    assert min(ious) >= 0.9, dict(zip(MARGINS, np.round(ious, 3), strict=True))
    truth = field.white_cells == 1
    assert (masks[0] & truth).sum() / (masks[0] | truth).sum() >= 0.85  # and the same is the right cell


@pytest.mark.parametrize("side", [64, 256])
def test_noise_is_no_white_cell(side: int) -> None:
    noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    cell = segment_cell(noise)
    assert not cell.found and cell.reason.startswith("no white cell found: nothing stands out from the image's noise")


def test_a_uniform_image_says_what_is_missing_not_nan() -> None:
    cell = segment_cell(np.full((120, 120, 3), (226, 214, 222), np.uint8))
    assert not cell.found and cell.reason == "no white cell found: the image is uniform: no stained region at all"
    field = segment_cell(smear_field(7, white_cells=0).image)
    assert not field.found and "nan" not in field.reason and "no white cell found: no " in field.reason


def test_the_whole_white_cells_of_an_image_are_counted(smear_photo) -> None:
    """A smear photograph given as one cell says it held two whole white cells (one cut out); a crop around one cell
    counts one, a neighbour cut by its border not counted; a cut-out on black is not counted by stain."""
    assert segment_cell(np.asarray(Image.open(smear_photo).convert("RGB"))).white_cells == 2
    field = smear_field(0, height=320, width=320, white_cells=2, touching=False)
    assert segment_cell(_crop_around(field, 1, 180)[0], red_cell_diameter=field.red_cell_diameter).white_cells == 1
    assert segment_cell(segment_cell(_crop_around(field, 1, 180)[0]).canvas).white_cells is None
