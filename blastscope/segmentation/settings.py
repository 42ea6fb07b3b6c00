"""The knobs of white-cell segmentation, in units that scale with the image (red-cell diameters, noise levels)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from blastscope.errors import BlastscopeError

FIELD_FRACTION = 1 / 6.4
"""Default red-cell diameter of a smear field, as a fraction of its longer side: a BCCD field (640 px, 100x
objective) shows red cells about 100 px across. Pass ``red_cell_diameter`` when your magnification differs."""

CROP_FRACTION = 1 / 4
"""Red-cell diameter of a single-cell crop, as a fraction of its shorter side, when neither its red cells nor its
nucleus can be measured (:mod:`blastscope.segmentation.scale`): a crop about twice as wide as its white cell, which is
1.5-2 red cells across."""


@dataclass(frozen=True, slots=True)
class SegmentationSettings:
    """Thresholds and sizes of the white-cell segmentation. Sizes are in red-cell diameters ``d`` (or their area
    ``pi d^2 / 4``), so one setting serves any magnification once ``d`` is right.

    Attributes
    ----------
    smoothing : float
        Gaussian standard deviation (px) applied before measuring stains.
    nucleus_floor : float
        Lowest haematoxylin amount (natural-log optical density) accepted as nuclear, whatever Otsu's threshold says
        (keeps red-cell rims out of fields with no white cell; BCCD nuclei measure 0.5-1.4).
    blueness_strong, blueness_weak : float
        Hysteresis thresholds on blueness (drop of ``b*`` below the background) for cytoplasm: pixels above ``weak``
        belong to a white cell when connected to pixels above ``strong``.
    noise_strong, noise_weak : float
        The same thresholds as multiples of the background's blueness noise; the larger of the two wins.
    edge_level : float
        The weak threshold is raised to this fraction of the typical cytoplasm blueness, so that a blurred cytoplasm
        edge is cut part-way up rather than at the noise floor (which would make every cell a rim too large).
    red_cell_limit : float
        Cytoplasm carries less red-cell stain (the deconvolution's third channel, optical density) than this: the
        bluish rims of red cells stay out.
    fragment_area : float
        Haematoxylin-positive specks smaller than this (red-cell areas) are ignored.
    fragment_gap : float
        Nuclear fragments closer than twice this (red-cell diameters) are one nucleus.
    lobe_area, lobe_gap : float
        A nuclear group smaller than ``lobe_area`` red-cell areas joins the nearest group within ``lobe_gap``
        diameters: the lobes of a neutrophil or eosinophil are one cell.
    min_nucleus_area : float
        Smallest nucleus of a white cell, in red-cell areas; platelets (2-3 um against a 7.5 um red cell, about 0.1)
        stay below it.
    reach, min_reach : float
        A cell extends at most ``max(min_reach * d, reach * D)`` beyond its nucleus, D being the equivalent diameter
        of the nucleus with the gaps between its lobes closed.
    opening : float
        Radius (red-cell diameters) of the morphological opening that cuts thin bridges between a cell and its
        neighbours.
    cell_opening : float
        Each cell is finally opened by a disk of at least this fraction of its own equivalent diameter: appendages
        narrower than that (a red cell's rim touching the cell) are cut off.
    merge_solidity, merge_contact : float
        Two touching cell regions are one cell when their union has at least ``merge_solidity`` solidity (area over
        convex-hull area), or when their shared border is at least ``merge_contact`` times the smaller region's
        equivalent diameter and the smaller one's nucleus is below ``lobe_max`` red-cell areas; two touching round
        cells meet at a waist (a short border) and stay apart, and two large nuclei are two cells.
    lobe_max : float
        Largest nucleus (red-cell areas) that may be a lobe of its neighbour's cell when joined by a long border.
    """

    smoothing: float = 2.0
    nucleus_floor: float = 0.3
    blueness_strong: float = 4.0
    blueness_weak: float = 2.5
    noise_strong: float = 5.0
    noise_weak: float = 2.5
    red_cell_limit: float = 0.15
    edge_level: float = 0.35
    fragment_area: float = 0.02
    fragment_gap: float = 0.06
    lobe_area: float = 0.5
    lobe_gap: float = 0.25
    min_nucleus_area: float = 0.3
    reach: float = 0.5
    min_reach: float = 0.3
    opening: float = 0.06
    cell_opening: float = 0.07
    merge_solidity: float = 0.93
    merge_contact: float = 0.65
    lobe_max: float = 1.25


DEFAULT_SETTINGS = SegmentationSettings()


def red_cell_area(diameter: float) -> float:
    """Area in px of a red cell ``diameter`` px across."""
    return math.pi * diameter**2 / 4


def checked_diameter(diameter: float | None, default: float) -> float:
    """``diameter`` if given (px, positive), else ``default``.

    Raises
    ------
    BlastscopeError
        When ``diameter`` is not a positive number.
    """
    if diameter is None:
        return float(default)
    if not math.isfinite(diameter) or diameter <= 2:
        raise BlastscopeError(
            f"red_cell_diameter {diameter} px is not usable; give the red cells' size in pixels (> 2)"
        )
    return float(diameter)
