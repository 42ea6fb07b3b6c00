"""Nuclei of white cells: the haematoxylin threshold, whether anything stands out from noise, and the nuclei themselves.

Haematoxylin above Otsu's threshold (Otsu 1979; never below ``nucleus_floor``), opened; specks dropped; fragments
closer than ``2 * fragment_gap`` merged, and small groups (lobes of segmented nuclei) merged into the nearest group
within ``lobe_gap``. Groups smaller than ``min_nucleus_area`` are platelets, not nuclei. Sizes are in red-cell
diameters (:class:`~blastscope.segmentation.settings.SegmentationSettings`).

References
----------
Otsu, N. (1979). A threshold selection method from gray-level histograms. *IEEE Transactions on Systems, Man, and
Cybernetics*, 9(1), 62-66.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from blastscope.segmentation.settings import SegmentationSettings, red_cell_area
from blastscope.segmentation.stains import StainMaps

NUCLEUS_CONTRAST = 8.0
"""Least contrast of the stained pixels: their median haematoxylin exceeds the background's level by at least this many
times the background's noise (:func:`nucleus_contrast`). Measured: 10 or more on 372 BCCD white-cell crops (box and
box plus 30%) and fields, hundreds on synthetic smears; uniform RGB noise 2-5 at 64-256 px, up to 7 at 1400 px."""
NUCLEUS_COHERENCE = 0.4
"""Least share of the stained pixels lying in regions wider than the stain maps' smoothing leaves noise
(:func:`stain_coherence`). Measured: 0.84 or more on the same BCCD crops and fields; 0.49 or more on synthetic smears
of 64 px (red cells 10 px, lobes barely wider than noise's specks), 0.87 from 96 px; uniform RGB noise about 0.7 at
64-128 px, 0.3 at 256 px, 0.1 or less from 512 px. Noise fails the contrast at every size (7.1 at most, at 1400 px),
and the coherence too from 256 px, where its contrast comes nearest; no BCCD image fails either."""


def nucleus_threshold(haematoxylin: np.ndarray, settings: SegmentationSettings) -> float:
    """Haematoxylin (optical density) above which a pixel is nuclear: Otsu's threshold, at least
    ``settings.nucleus_floor``; nan when the map is uniform (nothing is stained more than anything else)."""
    if float(np.ptp(haematoxylin)) < 1e-6:
        return float("nan")
    return max(float(threshold_otsu(haematoxylin)), settings.nucleus_floor)


def nucleus_contrast(maps: StainMaps, threshold: float) -> float:
    """How far the pixels above ``threshold`` stand out from the background, in units of the background's haematoxylin
    noise; inf on a noiseless background, 0 when no pixel is above the threshold. Compared with
    :data:`NUCLEUS_CONTRAST`.

    Level and noise are read on the background's upper side (its 75th percentile, and the distance to its 95th over
    that of a normal distribution, 0.97 standard deviations): where the fitted light source falls short of the true
    one, background pixels come out with negative stain, a lower tail that is the light's unevenness, not noise.
    """
    stained = maps.haematoxylin[maps.haematoxylin > threshold]
    if not stained.size:
        return 0.0
    level, high = np.percentile(maps.haematoxylin[maps.background], [75, 95])
    noise = (float(high) - float(level)) / 0.97
    excess = float(np.median(stained)) - float(level)
    return excess / noise if noise > 0 else float("inf")


def stain_coherence(haematoxylin: np.ndarray, threshold: float, smoothing: float) -> float:
    """Share of the pixels above ``threshold`` that an opening by a disk of ``1.5 * smoothing`` px keeps: noise smoothed
    by a Gaussian of ``smoothing`` px leaves specks about that wide, a nucleus is one wide region. 1 when no pixel is
    above the threshold. Compared with :data:`NUCLEUS_COHERENCE`."""
    stained = haematoxylin > threshold
    total = int(stained.sum())
    return float(opening(stained, 1.5 * smoothing).sum() / total) if total else 1.0


def label_nuclei(
    haematoxylin: np.ndarray, threshold: float, diameter: float, settings: SegmentationSettings
) -> np.ndarray:
    """Label the nuclei of white cells (lobes grouped, platelets dropped): HxW int32, 0 outside nuclei.

    ``threshold`` is :func:`nucleus_threshold`'s, ``diameter`` the red-cell diameter (px) every size scales with.
    """
    mask = opening(haematoxylin > threshold, max(1.0, 0.02 * diameter))
    area = red_cell_area(diameter)
    fragments, count = ndi.label(mask)
    if count == 0:
        return fragments.astype(np.int32)
    sizes = np.bincount(fragments.ravel(), minlength=count + 1)
    mask &= sizes[fragments] >= settings.fragment_area * area
    groups, count = ndi.label(dilate(mask, settings.fragment_gap * diameter))
    groups = np.where(mask, groups, 0)
    groups = _merge_lobes(groups, settings.lobe_area * area, settings.lobe_gap * diameter)
    sizes = np.bincount(groups.ravel())
    sizes[0] = 0
    kept = np.flatnonzero(sizes >= settings.min_nucleus_area * area)
    relabel = np.zeros(len(sizes), np.int32)
    relabel[kept] = np.arange(1, len(kept) + 1)
    return relabel[groups]


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disk of ``radius`` px (exact, through the distance transform)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask) <= radius


def opening(mask: np.ndarray, radius: float) -> np.ndarray:
    """Opening by a Euclidean disk of ``radius`` px: removes parts and bridges narrower than ``2 * radius``."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    eroded = ndi.distance_transform_edt(np.pad(mask, 1, constant_values=True))[1:-1, 1:-1] > radius
    return dilate(eroded, radius) & mask


def _merge_lobes(groups: np.ndarray, lobe_area: float, gap: float) -> np.ndarray:
    """Join each nuclear group smaller than ``lobe_area`` px to the nearest other group within ``gap`` px."""
    groups = groups.copy()
    while True:
        sizes = np.bincount(groups.ravel())
        sizes[0] = 0
        small = [int(g) for g in np.argsort(sizes) if 0 < sizes[g] < lobe_area]
        windows = ndi.find_objects(groups)
        for label in small:
            target = _nearest_group(groups, label, windows[label - 1], gap)
            if target:
                groups[groups == label] = target
                break
        else:
            return groups


def _nearest_group(groups: np.ndarray, label: int, window: tuple[slice, slice], gap: float) -> int:
    """The label of the group nearest to group ``label`` within ``gap`` px, or 0."""
    pad = int(np.ceil(gap)) + 1
    rows = slice(max(0, window[0].start - pad), min(groups.shape[0], window[0].stop + pad))
    cols = slice(max(0, window[1].start - pad), min(groups.shape[1], window[1].stop + pad))
    local = groups[rows, cols]
    distance = ndi.distance_transform_edt(local != label)
    others = (local > 0) & (local != label) & (distance <= gap)
    if not others.any():
        return 0
    return int(local[others][np.argmin(distance[others])])
