"""The red-cell diameter of a crop around one white cell, measured on the crop itself: the scale of its segmentation.

Every size the segmentation uses (smallest nucleus, gap between lobes, reach of the cytoplasm...) is a multiple of
the red-cell diameter ``d`` (:class:`~blastscope.segmentation.settings.SegmentationSettings`). A smear field's ``d``
follows from its size (:data:`~blastscope.segmentation.settings.FIELD_FRACTION`), but a crop may be cut tight
around its cell or wide around it, so its size says little: taken as a quarter of the shorter side, ``d`` was a
third of the truth on a crop cut at the cell's edge, and the nucleus came out without its cytoplasm. So ``d`` is
measured on the crop, in this order:

1. **Red cells.** The red-cell mask (optical density above Otsu's threshold, pallor filled, white cells left out)
   is measured by its distance transform: each red region's largest inscribed disk whose red cell lies whole in the
   crop is a red cell's size, in a clump of overlapping red cells too. They count when they lie within
   :data:`RED_CELL_RANGE` times the nucleus's estimate (below), which keeps out pale centres left open and red cells
   half hidden by others; without a nucleus, when they lie within :data:`RED_CELL_AGREEMENT` of the largest size
   that enough of them share. With at least :data:`MIN_RED_CELLS`, ``d`` is their upper quartile: a disk errs small
   (a red cell partly under its neighbours or the white cell, its rim lost to the threshold), so the larger ones are
   nearer the truth (on 44 synthetic smears: 0.98 of the true size, 10th-90th percentile 0.93-1.04; the median, 0.94).
2. **The central nucleus.** The nucleus under (or nearest) the crop's centre, with its lobes (nuclear pieces within
   half a piece's diameter of it, in a chain), measured as the equivalent diameter of their convex hull, divided by
   :data:`NUCLEUS_IN_RED_CELLS`. The same cell gives the same nucleus whatever the crop's margin. A "nucleus" under
   :data:`MIN_NUCLEUS_SHARE` of the crop's shorter side is a platelet or a speck, not a white cell's nucleus, and is
   not measured.
3. **The crop's size**: a quarter of its shorter side
   (:data:`~blastscope.segmentation.settings.CROP_FRACTION`), when neither can be measured.

The masks that follow depend little on ``d`` within a factor of about 1.3 either way, and suffer more when it is too
large (50 BCCD crops, 50 px margin, masks against those at ``d`` = 100 px: median IoU 0.998 at 75 px and at 130 px,
10th percentile 0.98; at 160 px some cells are lost), which is what this estimate has to meet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_image

from blastscope.segmentation.nuclei import nucleus_threshold, opening
from blastscope.segmentation.settings import CROP_FRACTION, SegmentationSettings
from blastscope.segmentation.stains import StainMaps

NUCLEUS_IN_RED_CELLS = 1.1
"""A white cell's nucleus (its lobes' convex hull) measures about this many red-cell diameters. Red cells are 7.5-8 um
across; small lymphocytes 7-10 um with a nucleus filling most of the cell; lymphoblasts, monocytes and neutrophils
10-20 um, their nucleus (or lobes) spanning 8-12 um (Bain, *Blood Cells: A Practical Guide*, 5th ed., 2015): 1.0-1.5.
Measured (hull's equivalent diameter over the red-cell diameter): median 1.03 (10th-90th percentile 0.89-1.67) on 50
BCCD white cells, red cells from the annotated red-cell boxes; 1.15 (0.99-1.25) on 30 synthetic smear cells. A ``d``
taken too large harms the masks more than one too small, and large nuclei (monocytes, blasts) make the tail."""
MIN_RED_CELLS = 3
"""Red cells that must be measured before their median is trusted over the nucleus's estimate."""
RED_CELL_RANGE = (0.7, 2.0)
"""A red region counts as a red cell when its inscribed diameter is within these multiples of the nucleus's
estimate of ``d``: smaller ones are pale centres left open, red cells half hidden by others, or platelets."""
RED_CELL_AGREEMENT = 0.75
"""Without a nucleus, red cells agree when they measure at least this share of the largest of them (the largest
size met by :data:`MIN_RED_CELLS` or more)."""
MIN_NUCLEUS_SHARE = 0.1
"""A central nucleus narrower than this share of the crop's shorter side is taken for a platelet or a speck (2-3 um,
a third of a red cell) in a crop with no white cell, not measured: a crop around one white cell is rarely more than
ten nuclei across."""
WHOLE = 1.5
"""A red cell's inscribed disk counts when its centre lies at least this many radii inside the crop: the red cell is
(nearly) whole in the crop, so the disk is bounded by its own edge, not the crop's (a red cell cut in half by the
edge would measure half its size)."""


@dataclass(frozen=True, slots=True)
class CropScale:
    """The red-cell diameter a crop is segmented at, and how it was found.

    Attributes
    ----------
    diameter : float
        Red-cell diameter, px of the crop.
    source : str
        In words: ``measured on N red cells``, ``from the central nucleus, N px across`` or ``a quarter of the
        crop's shorter side``.
    """

    diameter: float
    source: str


def crop_scale(maps: StainMaps, settings: SegmentationSettings) -> CropScale:
    """Measure the red-cell diameter of a crop around one white cell (see the module's docstring for how).

    Parameters
    ----------
    maps : StainMaps
        The crop's :func:`~blastscope.segmentation.stains.stain_maps`.
    settings : SegmentationSettings
        Its ``nucleus_floor`` sets the least haematoxylin of a nucleus.

    Returns
    -------
    CropScale
        The diameter and how it was found.
    """
    shorter = min(maps.haematoxylin.shape)
    threshold = nucleus_threshold(maps.haematoxylin, settings)
    nuclear = maps.haematoxylin > threshold if np.isfinite(threshold) else np.zeros(maps.haematoxylin.shape, bool)
    nuclear = opening(nuclear, 1.0)
    red = sorted(_red_cell_diameters(maps, nuclear), reverse=True)
    across = _central_nucleus_diameter(nuclear) if nuclear.any() else 0.0
    if across >= MIN_NUCLEUS_SHARE * shorter:
        from_nucleus = across / NUCLEUS_IN_RED_CELLS
        low, high = RED_CELL_RANGE
        agreeing = [size for size in red if low * from_nucleus <= size <= high * from_nucleus]
        if len(agreeing) >= MIN_RED_CELLS:
            return CropScale(float(np.percentile(agreeing, 75)), f"measured on {len(agreeing)} red cells")
        return CropScale(from_nucleus, f"from the central nucleus, {across:.0f} px across")
    for largest in red:  # no nucleus to compare with: the largest size that enough red cells share
        agreeing = [size for size in red if RED_CELL_AGREEMENT * largest <= size <= largest]
        if len(agreeing) >= MIN_RED_CELLS:
            return CropScale(float(np.percentile(agreeing, 75)), f"measured on {len(agreeing)} red cells")
    return CropScale(shorter * CROP_FRACTION, "a quarter of the crop's shorter side: no red cell or nucleus measured")


def _central_nucleus_diameter(nuclear: np.ndarray) -> float:
    """Equivalent diameter (px) of the convex hull of the nucleus under (or nearest) the image centre and its lobes:
    nuclear pieces within half the largest piece's diameter of it, in a chain (a lobed or fragmented nucleus is one),
    pieces under a tenth of the largest's area (specks) left out."""
    pieces, count = ndi.label(nuclear)
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    sizes[0] = 0
    height, width = nuclear.shape
    central = int(pieces[height // 2, width // 2])
    if not central:
        labels = np.arange(1, count + 1)
        centres = np.asarray(ndi.center_of_mass(nuclear, pieces, labels)).reshape(-1, 2)
        distance = np.hypot(centres[:, 0] - (height - 1) / 2, centres[:, 1] - (width - 1) / 2)
        distance[sizes[1:] < 0.1 * sizes.max()] = np.inf  # specks are not the cell's nucleus
        central = int(labels[np.argmin(distance)])
    lobes = np.array([central])
    while True:
        largest = sizes[lobes].max()
        reach = np.sqrt(largest / np.pi)  # half the largest piece's equivalent diameter
        near = np.unique(pieces[(ndi.distance_transform_edt(~np.isin(pieces, lobes)) <= reach) & nuclear])
        grown = near[sizes[near] >= 0.1 * largest]
        if len(grown) == len(lobes):
            break
        lobes = grown
    hull = convex_hull_image(np.isin(pieces, lobes))
    return float(2 * np.sqrt(hull.sum() / np.pi))


def _red_cell_diameters(maps: StainMaps, nuclear: np.ndarray) -> list[float]:
    """The inscribed diameter (px) of each red region: red-cell stain density above Otsu's threshold among pixels
    that are not nuclear and not bluer than the background, pale centres filled; the disk's centre must lie
    :data:`WHOLE` radii inside the crop."""
    density = maps.density.max(axis=2)
    candidates = ~nuclear & (maps.blueness <= 0)
    if candidates.sum() < 2 or float(np.ptp(density[candidates])) < 1e-6:
        return []
    red = candidates & (density > threshold_otsu(density[candidates]))
    red = ndi.binary_fill_holes(opening(red, 1.0))
    inscribed = ndi.distance_transform_edt(red)
    height, width = red.shape
    rows, cols = np.ogrid[:height, :width]
    to_edge = np.minimum(np.minimum(rows, cols), np.minimum(height - 1 - rows, width - 1 - cols))
    inside = np.where(to_edge >= WHOLE * inscribed, inscribed, 0.0)
    regions, count = ndi.label(red)
    if count == 0:
        return []
    radii = ndi.maximum(inside, regions, np.arange(1, count + 1))
    return [2.0 * float(radius) for radius in np.atleast_1d(radii) if radius > 0]
