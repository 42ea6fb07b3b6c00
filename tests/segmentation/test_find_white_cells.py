"""Scanning a smear field: every white cell found with a good mask, red cells and platelets ignored, touching cells
split, cells cut by the border flagged."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.data.synth import smear_field
from blastscope.errors import BlastscopeError, ImageError
from blastscope.segmentation import find_white_cells, label_white_cells

SEEDS = range(12)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _best_match(truth: np.ndarray, cells: np.ndarray) -> tuple[int, float]:
    """The predicted label overlapping ``truth`` most, and its IoU with it."""
    labels, counts = np.unique(cells[truth], return_counts=True)
    counts, labels = counts[labels > 0], labels[labels > 0]
    if not len(labels):
        return 0, 0.0
    label = int(labels[np.argmax(counts)])
    return label, _iou(truth, cells == label)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_white_cell_found_with_a_good_mask(seed: int) -> None:
    field = smear_field(seed, white_cells=seed % 4 + 1, cut_cells=seed % 2)
    labels = label_white_cells(field.image)
    assert labels.count == len(field.boxes)
    matched = set()
    for index in range(1, len(field.boxes) + 1):
        label, iou = _best_match(field.white_cells == index, labels.cells)
        assert iou >= 0.85, f"white cell {index}: mask IoU {iou:.2f}"
        assert labels.cut_by_border[label - 1] == field.cut_by_border[index - 1]
        matched.add(label)
    assert len(matched) == len(field.boxes)  # one predicted cell per true cell


def test_median_mask_iou_is_high() -> None:
    ious = []
    for seed in SEEDS:
        field = smear_field(seed)
        cells = label_white_cells(field.image).cells
        ious += [_best_match(field.white_cells == k, cells)[1] for k in range(1, len(field.boxes) + 1)]
    assert np.median(ious) >= 0.92


@pytest.mark.parametrize("seed", SEEDS)
def test_red_cells_and_platelets_are_ignored(seed: int) -> None:
    field = smear_field(seed, platelets=10)
    cells = label_white_cells(field.image).cells > 0
    truth = field.white_cells > 0
    assert (cells & ~truth).sum() <= 0.1 * truth.sum()  # only a thin rim outside the true cells
    assert not (cells & field.platelets).any()
    assert (cells & field.red_cells).sum() <= 0.01 * field.red_cells.sum()


def test_field_without_white_cells_finds_none() -> None:
    field = smear_field(7, white_cells=0, platelets=12)
    assert label_white_cells(field.image).count == 0
    assert find_white_cells(field.image) == []


@pytest.mark.parametrize("seed", [0, 2, 5, 9, 11, 13])
def test_touching_cells_are_split(seed: int) -> None:
    field = smear_field(seed, white_cells=2, touching=True)
    cells = label_white_cells(field.image).cells
    first, iou_first = _best_match(field.white_cells == 1, cells)
    second, iou_second = _best_match(field.white_cells == 2, cells)
    assert first != second and min(iou_first, iou_second) >= 0.85


def test_cut_cells_are_flagged_and_left_out_unless_kept() -> None:
    field = smear_field(4, white_cells=2, touching=False, cut_cells=2)
    kept = find_white_cells(field.image, keep_cut=True)
    assert len(kept) == 4 and sum(cell.cut_by_border for cell in kept) == 2
    complete = find_white_cells(field.image)
    assert len(complete) == 2 and not any(cell.cut_by_border for cell in complete)


def test_found_cells_carry_box_mask_centroid_and_cutout() -> None:
    field = smear_field(6, white_cells=3)
    found = find_white_cells(field.image, canvas_size=200)
    assert len(found) == 3
    for cell in found:
        x0, y0, x1, y1 = cell.box
        assert cell.mask.shape == (y1 - y0, x1 - x0) and cell.mask.dtype == bool
        assert cell.area == cell.mask.sum() and 0 < cell.nucleus_area < cell.area
        assert x0 <= cell.centroid[0] < x1 and y0 <= cell.centroid[1] < y1
        assert cell.cutout.found and cell.canvas.shape == (200, 200, 3) and cell.canvas.dtype == np.uint8
        assert cell.cutout.mask.sum() == cell.area  # scale 1: every pixel kept, none zoomed
        assert (cell.canvas[~cell.cutout.mask] == 0).all()
        rows, cols = np.nonzero(cell.cutout.mask)
        assert abs((rows.min() + rows.max()) / 2 - 99.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 99.5) <= 1
        placed = np.zeros(field.white_cells.shape, bool)
        placed[y0:y1, x0:x1] = cell.mask
        assert _best_match(placed, field.white_cells)[1] >= 0.85


def test_scale_changes_every_cell_by_the_same_factor() -> None:
    field = smear_field(6, white_cells=3)
    plain = find_white_cells(field.image)
    halved = find_white_cells(field.image, scale=0.5)
    ratios = [small.cutout.mask.sum() / big.cutout.mask.sum() for small, big in zip(halved, plain, strict=True)]
    assert np.allclose(ratios, 0.25, atol=0.03)


def test_bad_input_raises() -> None:
    with pytest.raises(ImageError):
        label_white_cells(np.zeros((50, 50), np.uint8))
    with pytest.raises(ImageError):
        label_white_cells(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(BlastscopeError):
        find_white_cells(smear_field(0).image, canvas_size=0)
    with pytest.raises(BlastscopeError):
        label_white_cells(smear_field(0).image, red_cell_diameter=-5)


@pytest.mark.parametrize(("height", "width"), [(480, 640), (160, 200)])
def test_sizes_scale_with_the_field(height: int, width: int) -> None:
    """The default red-cell size follows the field's size, so a field drawn at another size is segmented alike."""
    field = smear_field(8, height=height, width=width, white_cells=3, touching=True)
    cells = label_white_cells(field.image).cells
    ious = [_best_match(field.white_cells == k, cells)[1] for k in range(1, len(field.boxes) + 1)]
    assert len(np.unique(cells)) - 1 == len(field.boxes) and min(ious) >= 0.85


def test_cut_out_on_black_is_one_cell() -> None:
    canvas = find_white_cells(smear_field(6, white_cells=1).image, canvas_size=160)[0].canvas
    found = find_white_cells(canvas, canvas_size=160)
    assert len(found) == 1 and found[0].cutout.found and found[0].nucleus_area == 0
    assert np.array_equal(found[0].canvas, canvas)  # already centred: unchanged
