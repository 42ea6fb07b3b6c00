"""Stain normalisation and jitter: recover known stains, move an image onto a reference, never touch the background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2lab

from blastscope.data.stain import (
    DEFAULT_LAB,
    StainNormalizer,
    SubjectColour,
    cell_pixels,
    fit_lab,
    fit_macenko,
    jitter_hed,
)
from blastscope.errors import BlastscopeError

PURPLE = np.array([0.55, 0.75, 0.37])
PINK = np.array([0.15, 0.90, 0.40])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def two_stain_cell(first: np.ndarray, second: np.ndarray, size: int = 48, seed: int = 0) -> np.ndarray:
    """A disc of pixels mixing two known stains in random amounts, on black."""
    rng = np.random.default_rng(seed)
    amounts = rng.uniform(0.05, 1.0, size=(size, size, 2))
    density = amounts[..., :1] * _unit(first) + amounts[..., 1:] * _unit(second)
    pixels = np.clip(np.rint(256 * np.exp(-density) - 1), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    pixels[np.hypot(yy, xx) > size * 0.4] = 0
    return pixels


def test_cell_pixels_exclude_the_black_background() -> None:
    cell = two_stain_cell(PURPLE, PINK)
    mask = cell_pixels(cell)
    assert not mask[0, 0] and mask[24, 24]
    assert 0.4 < mask.mean() < 0.6


def test_macenko_recovers_the_stains_an_image_was_made_of() -> None:
    stains = fit_macenko(two_stain_cell(PURPLE, PINK))
    for truth in (PURPLE, PINK):
        assert max(float(np.dot(_unit(truth), vector)) for vector in stains.vectors.T) > 0.99


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_normalising_moves_an_image_onto_the_reference_and_keeps_the_background(method: str) -> None:
    reference = two_stain_cell(PURPLE, PINK, seed=1)
    source = two_stain_cell(np.array([0.30, 0.80, 0.20]), np.array([0.05, 0.60, 0.80]), seed=2)
    result = StainNormalizer(method, reference)(source)

    def lab_mean(image: np.ndarray) -> np.ndarray:
        return rgb2lab(image[cell_pixels(image)] / 255.0).mean(axis=0)

    before = np.linalg.norm(lab_mean(source) - lab_mean(reference))
    after = np.linalg.norm(lab_mean(result) - lab_mean(reference))
    assert after < 0.35 * before
    background = ~cell_pixels(source)
    assert (result[background] == source[background]).all()


def test_reinhard_matches_the_reference_statistics() -> None:
    reference = two_stain_cell(PURPLE, PINK, seed=1)
    result = StainNormalizer("reinhard", reference)(two_stain_cell(PINK, PURPLE, seed=3))
    np.testing.assert_allclose(fit_lab(result).mean, fit_lab(reference).mean, atol=1.5)
    np.testing.assert_allclose(fit_lab(result).std, fit_lab(reference).std, rtol=0.15)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_default_reference_changes_cells_and_leaves_empty_images_alone(method: str) -> None:
    normalise = StainNormalizer(method)
    cell = two_stain_cell(PURPLE, PINK)
    assert not np.array_equal(normalise(cell), cell)
    nearly_empty = np.zeros((32, 32, 3), np.uint8)
    nearly_empty[0, :5] = 200
    assert np.array_equal(normalise(nearly_empty), nearly_empty)


def test_unknown_method_and_blank_reference_are_user_errors() -> None:
    with pytest.raises(BlastscopeError, match="macenko, reinhard"):
        StainNormalizer("vahadane")  # type: ignore[arg-type]
    with pytest.raises(BlastscopeError, match="cell pixels"):
        StainNormalizer("macenko", np.zeros((32, 32, 3), np.uint8))


def test_hed_jitter_is_identity_at_zero_and_changes_only_cell_pixels() -> None:
    cell = two_stain_cell(PURPLE, PINK)
    unchanged = jitter_hed(cell, scale=np.ones(3), shift=np.zeros(3))
    assert np.abs(unchanged.astype(int) - cell).max() <= 1
    jittered = jitter_hed(cell, scale=np.array([1.1, 0.9, 1.0]), shift=np.array([0.02, -0.02, 0.0]))
    background = ~cell_pixels(cell)
    assert (jittered[background] == 0).all()
    assert np.abs(jittered.astype(int) - cell)[~background].mean() > 2


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_an_image_normalised_to_itself_barely_changes(method: str) -> None:
    cell = two_stain_cell(PURPLE, PINK, seed=4)
    inside = cell_pixels(cell)
    assert np.abs(StainNormalizer(method, cell)(cell).astype(int) - cell)[inside].mean() < 2.0


@pytest.mark.integration
def test_macenko_on_real_cells_keeps_their_colour_and_narrows_its_spread(cnmc_sample: Path) -> None:
    from PIL import Image

    normalise = StainNormalizer("macenko")
    before, after = [], []
    for path in sorted(cnmc_sample.glob("train/*/*/*.png"))[::4]:
        cell = np.asarray(Image.open(path).convert("RGB").resize((96, 96)))
        inside = cell_pixels(cell)
        assert np.abs(StainNormalizer("macenko", cell)(cell).astype(int) - cell)[inside].mean() < 4, path.name
        before.append(cell[inside].mean(axis=0))
        after.append(normalise(cell)[inside].mean(axis=0))
    np.testing.assert_allclose(np.mean(after, axis=0), np.mean(before, axis=0), atol=6)
    assert (np.std(after, axis=0) < np.std(before, axis=0)).all()


def _person_cells(shift: float, seed: int, n: int = 4) -> list[np.ndarray]:
    """``n`` cells of one person: one stain, each cell a little darker than the last, all shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        image = np.zeros((40, 40, 3), dtype=np.uint8)
        colour = np.array([150.0 + shift - 8 * i, 100.0, 180.0 - shift / 2])
        image[8:32, 8:32] = np.clip(rng.normal(colour, 6, (24, 24, 3)), 0, 255)
        cells.append(image)
    return cells


def test_subject_colour_maps_each_person_onto_the_reference_and_keeps_their_cells_apart() -> None:
    plain, shifted = _person_cells(0.0, 0), _person_cells(50.0, 1)
    colour = SubjectColour.fit([("a", cell) for cell in plain] + [("b", cell) for cell in shifted])
    assert colour.cells == {"a": 4, "b": 4}
    pooled = {
        person: np.concatenate([rgb2lab(colour(cell, person)[cell_pixels(cell)] / 255.0) for cell in cells])
        for person, cells in (("a", plain), ("b", shifted))
    }
    for lab in pooled.values():  # both people land on the reference, pooled over their cells
        np.testing.assert_allclose(lab.mean(axis=0), DEFAULT_LAB.mean, atol=0.5)
    lightness = [fit_lab(colour(cell, "a")).mean[0] for cell in plain]
    assert all(np.diff(lightness) < 0)  # the differences between one person's cells stay
    assert (colour(plain[0], "a")[:8] == 0).all()  # the background stays black


def test_subject_colour_refuses_an_unfitted_person_and_leaves_an_empty_person_alone() -> None:
    empty = np.zeros((20, 20, 3), dtype=np.uint8)
    colour = SubjectColour.fit([("a", _person_cells(0.0, 0, 1)[0]), ("blank", empty)])
    np.testing.assert_array_equal(colour(empty, "blank"), empty)
    with pytest.raises(KeyError):
        colour(empty, "nobody")
