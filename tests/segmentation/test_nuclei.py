"""Nuclei stand out from the background by many times its noise, in wide regions; noise does neither, and a uniform
image has no stain threshold at all."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blastscope.data.synth import smear_field
from blastscope.segmentation import stain_maps
from blastscope.segmentation.nuclei import (
    NUCLEUS_COHERENCE,
    NUCLEUS_CONTRAST,
    nucleus_contrast,
    nucleus_threshold,
    stain_coherence,
)
from blastscope.segmentation.settings import DEFAULT_SETTINGS


def _measures(image: np.ndarray) -> tuple[float, float]:
    maps = stain_maps(image)
    threshold = nucleus_threshold(maps.haematoxylin, DEFAULT_SETTINGS)
    return nucleus_contrast(maps, threshold), stain_coherence(maps.haematoxylin, threshold, DEFAULT_SETTINGS.smoothing)


def test_a_nucleus_stands_out_in_one_wide_region() -> None:
    contrast, coherence = _measures(smear_field(0, white_cells=1).image)
    assert contrast > 5 * NUCLEUS_CONTRAST and coherence > 0.9


@pytest.mark.parametrize("side", [64, 256, 512])
def test_noise_fails_the_contrast_and_from_256_px_the_coherence_too(side: int) -> None:
    contrast, coherence = _measures(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8))
    assert contrast < NUCLEUS_CONTRAST
    assert side < 256 or coherence < NUCLEUS_COHERENCE


def test_a_uniform_image_has_no_threshold() -> None:
    maps = stain_maps(np.full((64, 64, 3), 200, np.uint8))
    assert math.isnan(nucleus_threshold(maps.haematoxylin, DEFAULT_SETTINGS))
