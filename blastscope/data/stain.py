"""Stain normalisation (Macenko, Reinhard) and stain jitter for segmented cells on a black background.

Microscopy stain varies between slides and labs; normalising it to one reference removes a nuisance that models would
otherwise learn per subject. Only cell pixels are used and changed: C-NMC's black background is not a stained pixel and
would dominate every statistic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion
from skimage.color import hed2rgb, lab2rgb, rgb2hed, rgb2lab

from blastscope.data.augment import STAIN_METHODS, StainMethod
from blastscope.data.images import read_rgb
from blastscope.errors import BlastscopeError
from blastscope.segmentation.background import CELL_LEVEL

MIN_CELL_PIXELS = 64  # fewer cell pixels than this give no usable stain statistics
RIM = 2  # pixels of the cell's outline left out of stain fits: segmentation blends them with the black background
LIGHT = 256.0  # incident light; one above the brightest uint8 value keeps log() finite
MACENKO_LOW_DENSITY = 0.15  # optical densities at or below this in any channel are too faint to fit stains on


@dataclass(frozen=True, slots=True)
class MacenkoStains:
    """Two stain optical-density unit vectors (columns, darker-in-red first) and their 99th-percentile amounts."""

    vectors: np.ndarray
    max_concentrations: np.ndarray


@dataclass(frozen=True, slots=True)
class LabStatistics:
    """Mean and standard deviation of the cell pixels in CIE L*a*b*, per channel."""

    mean: np.ndarray
    std: np.ndarray


# The median of the per-image fits over the 52-image C-NMC 2019 sample (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New
# Delhi, via TCIA): by default, cells are mapped onto what a typical C-NMC cell looks like.
DEFAULT_MACENKO = MacenkoStains(
    vectors=np.array([[0.5237, 0.4259], [0.7598, 0.7935], [0.3854, 0.4347]]),
    max_concentrations=np.array([2.9514, 2.7319]),
)
DEFAULT_LAB = LabStatistics(mean=np.array([18.0, 27.7, -22.6]), std=np.array([4.0, 2.8, 3.2]))


def cell_pixels(rgb: np.ndarray) -> np.ndarray:
    """Boolean HxW mask of the pixels that belong to the cell rather than the black background."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) >= CELL_LEVEL


def cell_interior(rgb: np.ndarray) -> np.ndarray:
    """The cell pixels at least ``RIM`` pixels inside the outline, whose colour is stain alone."""
    return binary_erosion(cell_pixels(rgb), iterations=RIM)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 1.0) / LIGHT)


def fit_macenko(rgb: np.ndarray, low_density: float = MACENKO_LOW_DENSITY, percentile: float = 1.0) -> MacenkoStains:
    """Estimate the two stains of an image (Macenko et al. 2009): the extreme angles of its cell interior's optical
    densities within their principal plane.

    The plane comes from the uncentred densities, as the paper's SVD does: centring (np.cov) would drop the mean
    stain direction, which on these nearly one-colour cells is most of the signal.
    """
    density = optical_density(rgb[cell_interior(rgb)])
    density = density[(density > low_density).all(axis=1)]
    if len(density) < MIN_CELL_PIXELS:
        raise BlastscopeError(f"stain fit needs at least {MIN_CELL_PIXELS} stained cell pixels; got {len(density)}")
    _, eigenvectors = np.linalg.eigh(density.T @ density)
    plane = eigenvectors[:, 1:3]
    plane *= np.sign(plane.sum(axis=0, keepdims=True) + 1e-12)  # point both axes towards positive density
    projected = density @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [percentile, 100 - percentile])
    vectors = plane @ np.array([[np.cos(low), np.cos(high)], [np.sin(low), np.sin(high)]])
    vectors /= np.linalg.norm(vectors, axis=0, keepdims=True)
    if vectors[0, 0] < vectors[0, 1]:
        vectors = vectors[:, ::-1]
    concentrations = np.linalg.pinv(vectors) @ density.T
    return MacenkoStains(vectors, np.percentile(concentrations, 99, axis=1))


def fit_lab(rgb: np.ndarray) -> LabStatistics:
    """Per-channel L*a*b* statistics of an image's cell pixels, the target of Reinhard normalisation."""
    pixels = rgb[cell_pixels(rgb)]
    if len(pixels) < MIN_CELL_PIXELS:
        raise BlastscopeError(f"stain fit needs at least {MIN_CELL_PIXELS} cell pixels; got {len(pixels)}")
    lab = rgb2lab(pixels / 255.0)
    return LabStatistics(lab.mean(axis=0), lab.std(axis=0))


class StainNormalizer:
    """Maps each image's cell pixels onto a reference stain; the background stays black.

    Images with too few cell pixels to measure their stain pass through unchanged rather than failing a whole run.
    """

    def __init__(self, method: StainMethod, reference: np.ndarray | None = None) -> None:
        if method not in STAIN_METHODS:
            raise BlastscopeError(f"unknown stain normalisation {method!r}; choose one of {', '.join(STAIN_METHODS)}")
        self.method = method
        if method == "macenko":
            self.target: MacenkoStains | LabStatistics = (
                DEFAULT_MACENKO if reference is None else fit_macenko(reference)
            )
        else:
            self.target = DEFAULT_LAB if reference is None else fit_lab(reference)

    @classmethod
    def from_reference_file(cls, method: StainMethod, path: str | Path | None) -> StainNormalizer:
        """Fit to a reference image file, or use the C-NMC default reference when ``path`` is None."""
        reference = None if path is None else np.asarray(read_rgb(Path(path)))
        return cls(method, reference)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        mask = cell_pixels(rgb)
        if mask.sum() < MIN_CELL_PIXELS:
            return rgb
        normalise = self._macenko if self.method == "macenko" else self._reinhard
        result = rgb.copy()
        result[mask] = normalise(rgb, mask)
        return result

    def _macenko(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        try:
            source = fit_macenko(rgb)
        except BlastscopeError:
            return rgb[mask]
        target = self.target
        density = optical_density(rgb[mask])
        concentrations = np.maximum(np.linalg.pinv(source.vectors) @ density.T, 0.0)
        concentrations *= (target.max_concentrations / np.maximum(source.max_concentrations, 1e-6))[:, None]
        light = LIGHT * np.exp(-(target.vectors @ concentrations).T) - 1.0
        return np.clip(np.rint(light), 0, 255).astype(np.uint8)

    def _reinhard(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lab = rgb2lab(rgb[mask] / 255.0)
        return _match_lab(lab, LabStatistics(lab.mean(axis=0), lab.std(axis=0)), self.target)


def _match_lab(lab: np.ndarray, source: LabStatistics, target: LabStatistics) -> np.ndarray:
    """Reinhard's transfer of (N, 3) L*a*b* pixels from ``source`` statistics to ``target``'s, as uint8 RGB (N, 3)."""
    matched = (lab - source.mean) * (target.std / np.maximum(source.std, 1e-6)) + target.mean
    return np.clip(np.rint(lab2rgb(matched) * 255.0), 0, 255).astype(np.uint8)


class SubjectColour:
    """Per-person Reinhard colour normalisation: every cell of a person is mapped by the L*a*b* mean and standard
    deviation pooled over the cell pixels of all that person's cells onto ``target`` (Reinhard et al. 2001, with the
    statistics of a person instead of an image).

    Why per person: on C-NMC the errors are whole people (stain, exposure and smear preparation shift all of one
    person's cells alike); per-image normalisation also erases the colour differences between one person's cells,
    which carry the diagnosis, and measured no gain. The background stays black; a person whose cells hold fewer than
    :data:`MIN_CELL_PIXELS` cell pixels in all is left as decoded.

    Parameters
    ----------
    statistics : mapping of str to LabStatistics
        Each person's pooled statistics (:meth:`fit`).
    cells : mapping of str to int
        How many cells each person's statistics were pooled over.
    target : LabStatistics
        Where every person is mapped to; by default the typical C-NMC cell (:data:`DEFAULT_LAB`).
    """

    def __init__(
        self, statistics: Mapping[str, LabStatistics], cells: Mapping[str, int], target: LabStatistics = DEFAULT_LAB
    ) -> None:
        self.statistics = dict(statistics)
        self.cells = dict(cells)
        self.target = target

    @classmethod
    def fit(cls, images: Iterable[tuple[str, np.ndarray]], target: LabStatistics = DEFAULT_LAB) -> SubjectColour:
        """Pool the cell pixels of ``(person, uint8 (H, W, 3) RGB image)`` pairs per person, in one pass."""
        sums: dict[str, np.ndarray] = {}
        cells: dict[str, int] = {}
        for person, rgb in images:
            lab = rgb2lab(rgb[cell_pixels(rgb)] / 255.0)
            moments = np.stack([np.full(3, len(lab), dtype=np.float64), lab.sum(axis=0), (lab**2).sum(axis=0)])
            sums[person] = sums.get(person, 0.0) + moments
            cells[person] = cells.get(person, 0) + 1
        statistics = {}
        for person, (count, total, squares) in sums.items():
            if count[0] >= MIN_CELL_PIXELS:
                mean = total / count
                statistics[person] = LabStatistics(mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0)))
        return cls(statistics, cells, target)

    def __call__(self, rgb: np.ndarray, person: str) -> np.ndarray:
        """``rgb`` (uint8 (H, W, 3)) normalised by ``person``'s statistics; KeyError for a person not fitted."""
        if person not in self.cells:
            raise KeyError(person)
        source = self.statistics.get(person)
        mask = cell_pixels(rgb)
        if source is None or not mask.any():
            return rgb
        result = rgb.copy()
        result[mask] = _match_lab(rgb2lab(rgb[mask] / 255.0), source, self.target)
        return result


def jitter_hed(rgb: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scale and shift each stain's amount in the haematoxylin-eosin-DAB space of the cell pixels (Tellez et al.
    2018), simulating another lab's staining; the background stays black."""
    mask = cell_pixels(rgb)
    result = rgb.copy()
    stains = rgb2hed(rgb[mask] / 255.0)
    result[mask] = np.clip(np.rint(hed2rgb(stains * scale + shift) * 255.0), 0, 255).astype(np.uint8)
    return result
