"""Stain maps: the light source is found under vignetting and under a large dark cell; nuclei are haematoxylin,
cytoplasm is bluer than the background, red cells are not."""

from __future__ import annotations

import numpy as np

from blastscope.data.synth import smear_field
from blastscope.segmentation import background_white, stain_maps


def _vignetted(height: int = 200, width: int = 260) -> np.ndarray:
    y = (np.arange(height)[:, None] - height / 2) / (height / 2)
    x = (np.arange(width)[None, :] - width / 2) / (width / 2)
    fall_off = 1.0 - 0.12 * (x**2 + y**2) / 2
    return fall_off[..., None] * np.array([205.0, 210.0, 214.0])


def test_light_source_follows_vignetting() -> None:
    light = _vignetted()
    white = background_white(np.rint(light).astype(np.uint8))
    assert np.abs(white / light - 1).max() < 0.03


def test_light_source_is_not_darkened_by_a_large_dark_cell() -> None:
    light = _vignetted()
    image = light.copy()
    y, x = np.ogrid[:200, :260]
    disk = (y - 100) ** 2 + (x - 130) ** 2 < 70**2  # a dark cell over a third of the image
    image[disk] = [70, 30, 90]
    white = background_white(np.rint(image).astype(np.uint8))
    assert np.abs(white[disk] / light[disk] - 1).max() < 0.05


def test_maps_tell_nucleus_cytoplasm_red_cells_and_background_apart() -> None:
    field = smear_field(2)
    maps = stain_maps(field.image)
    nucleus = field.nuclei > 0
    cytoplasm = (field.white_cells > 0) & ~nucleus
    background = (field.white_cells == 0) & ~field.red_cells & ~field.platelets
    h = maps.haematoxylin
    assert np.median(h[nucleus]) > 3 * max(np.median(h[field.red_cells]), np.median(h[cytoplasm]), 0.05)
    blue = maps.blueness
    assert np.median(blue[cytoplasm]) > 4 > np.median(blue[background]) > np.median(blue[field.red_cells])
    assert np.median(maps.red_cell[field.red_cells]) > 0.2 > np.median(maps.red_cell[cytoplasm])
    assert np.abs(np.median(maps.density[background], axis=0)).max() < 0.05
    assert maps.white.shape == field.image.shape and maps.haematoxylin.shape == field.image.shape[:2]
