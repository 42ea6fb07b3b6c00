"""The synthetic smear fields: deterministic, fast, and their ground truth agrees with itself."""

from __future__ import annotations

import time

import numpy as np
import pytest

from blastscope.data.synth import smear_field
from blastscope.errors import DataError


def test_same_seed_same_field_and_other_seed_other_field() -> None:
    first, again, other = smear_field(3), smear_field(3), smear_field(4)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.white_cells, again.white_cells)
    assert not np.array_equal(first.image, other.image)


def test_ground_truth_is_consistent() -> None:
    field = smear_field(5, white_cells=3, cut_cells=1)
    assert field.image.shape == (240, 320, 3) and field.image.dtype == np.uint8
    assert field.white_cells.max() == 4 == len(field.boxes) == len(field.cut_by_border)
    assert field.cut_by_border.tolist() == [False, False, False, True]
    for index, (x0, y0, x1, y1) in enumerate(field.boxes, start=1):
        ys, xs = np.nonzero(field.white_cells == index)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        nucleus = field.nuclei == index
        assert nucleus.any() and (field.white_cells[nucleus] == index).all()
        touches_edge = x0 == 0 or y0 == 0 or x1 == 320 or y1 == 240
        assert touches_edge == field.cut_by_border[index - 1]
    assert not (field.red_cells & (field.white_cells > 0)).any()
    assert not (field.platelets & (field.white_cells > 0)).any()
    assert field.red_cells.mean() > 0.2 and field.platelets.any()


def test_touching_pair_touches() -> None:
    field = smear_field(1, white_cells=2, touching=True)
    assert field.touching == [(1, 2)]
    first = field.white_cells == 1
    grown = np.zeros_like(first)
    grown[1:] |= first[:-1]
    grown[:-1] |= first[1:]
    grown[:, 1:] |= first[:, :-1]
    grown[:, :-1] |= first[:, 1:]
    assert (grown & (field.white_cells == 2)).any()


def test_cells_look_stained() -> None:
    field = smear_field(2)
    image = field.image.astype(float)
    nucleus, red = image[field.nuclei > 0].mean(axis=0), image[field.red_cells].mean(axis=0)
    background = image[(field.white_cells == 0) & ~field.red_cells & ~field.platelets].mean(axis=0)
    assert nucleus[2] > nucleus[0] + 30  # violet-blue
    assert red[0] > red[2]  # pink-red
    assert background.min() > 180  # bright


def test_fast_enough_for_tests() -> None:
    started = time.perf_counter()
    for seed in range(5):
        smear_field(seed)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    "kwargs",
    [{"height": 32}, {"white_cells": 5}, {"cut_cells": -1}, {"red_cell_cover": 0.95}, {"red_cell_diameter": 0}],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(DataError):
        smear_field(0, **kwargs)


def test_no_room_raises_a_data_error() -> None:
    with pytest.raises(DataError, match="cannot fit"):
        smear_field(0, height=64, width=64, white_cells=4, red_cell_diameter=30)
