"""A crop's red-cell diameter is measured on the crop: the same cell gives the same scale whatever the crop's margin,
whole red cells are used when there are enough, and a platelet is never taken for a nucleus."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.data.synth import smear_field
from blastscope.segmentation import stain_maps
from blastscope.segmentation.cell import CROP_WINDOW
from blastscope.segmentation.scale import crop_scale
from blastscope.segmentation.settings import DEFAULT_SETTINGS


def _crop(seed: int, margin: int) -> tuple[np.ndarray, float]:
    """White cell 1 of a 480 px synthetic field with ``margin`` px around its box, and the field's red-cell size."""
    field = smear_field(seed, height=480, width=480, white_cells=1, touching=False)
    x0, y0, x1, y1 = field.boxes[0]
    top, left = max(0, y0 - margin), max(0, x0 - margin)
    return field.image[top : y1 + margin, left : x1 + margin], field.red_cell_diameter


def _scale(image: np.ndarray):
    return crop_scale(stain_maps(image, window=CROP_WINDOW), DEFAULT_SETTINGS)


@pytest.mark.parametrize("seed", range(4))
def test_a_tight_and_a_wide_crop_of_one_cell_get_about_the_same_scale(seed: int) -> None:
    tight, truth = _crop(seed, 0)
    wide, _ = _crop(seed, 120)
    at_tight, at_wide = _scale(tight).diameter, _scale(wide).diameter
    assert 0.75 <= at_tight / truth <= 1.25 and 0.75 <= at_wide / truth <= 1.25, (at_tight, at_wide, truth)
    assert abs(at_tight - at_wide) <= 0.25 * truth
    assert _scale(tight).source.startswith("from the central nucleus")  # no whole red cell fits a tight crop


def test_whole_red_cells_are_measured_when_a_crop_holds_enough() -> None:
    wide, truth = _crop(2, 120)
    scale = _scale(wide)
    assert scale.source.startswith("measured on") and scale.source.endswith("red cells")
    assert int(scale.source.split()[2]) >= 3 and abs(scale.diameter / truth - 1) <= 0.15


def test_a_platelet_is_not_taken_for_a_nucleus() -> None:
    field = smear_field(7, white_cells=0)  # red cells and violet platelets, no white cell
    scale = _scale(field.image)
    assert not scale.source.startswith("from the central nucleus")
    assert scale.diameter >= 0.5 * field.red_cell_diameter


def test_without_red_cells_or_a_nucleus_the_crop_size_is_used() -> None:
    scale = _scale(np.full((120, 200, 3), (226, 214, 222), np.uint8))
    assert scale.diameter == 30 and scale.source.startswith("a quarter of the crop's shorter side")
