"""Scan one smear photograph: find every white cell, cut each out onto black like C-NMC, classify it, judge the image.

Scale. The photograph is brought to the scale of a BCCD field before its cells are looked for: red cells
``RED_CELL_ON_CANVAS`` (100) px across, at which :func:`~blastscope.segmentation.find_white_cells` is tuned and at
which cut-outs come out in C-NMC's size range (:mod:`blastscope.segmentation.canvas`). The red-cell diameter is given
(``red_cell_diameter``, photograph px) or assumed as 1/6.4 of the longer side, as in a BCCD field; so a 2592x1944
camera photograph of a BCCD-like field is scanned at 640x480. The working copy is never enlarged and never holds more
than ``MAX_WORKING_PIXELS``; where that makes red cells smaller than 100 px, the cut-outs are enlarged to make up.
Boxes, centroids and outlines are reported in the photograph's own pixels.

Memory. Segmentation peaks at about ``SEGMENTATION_BYTES_PER_PIXEL`` bytes per working pixel (measured with
tracemalloc: 243 bytes per pixel, 75 MB on a 640x480 BCCD field, 1.22 GB on the same field at 2592x1944;
``benchmarks/RESULTS.md``), which is why it runs on the
working copy: :func:`scan_working_bytes` is the estimate a server reserves before scanning.

An image that is already one cell on black (a C-NMC image, or a crop of one) is not a smear photograph: it is refused
(``ON_BLACK_REASON``) rather than scanned as a field, since it would be rescaled and cut out again and so classified
unlike ``predict`` classifies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from skimage.measure import find_contours

from blastscope.errors import BlastscopeError, ImageError
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.segmentation import CNMC_CANVAS, FoundCell, find_white_cells, is_on_black
from blastscope.segmentation.modes import is_grey
from blastscope.segmentation.settings import FIELD_FRACTION
from blastscope.workflows.scan.overlay import OVERLAY_MAX_SIDE, draw_overlay
from blastscope.workflows.scan.result import ImageScan, ScannedCell, SkippedCell

RED_CELL_ON_CANVAS = 100.0
"""Red-cell diameter (px) the photograph is scanned at: a BCCD field's, where cut-outs match C-NMC's cell sizes."""
MAX_WORKING_PIXELS = 2_000_000
"""The largest working copy, px: about 0.5 GB of segmentation memory."""
SEGMENTATION_BYTES_PER_PIXEL = 250  # 243 measured, rounded up
"""Peak bytes of :func:`~blastscope.segmentation.find_white_cells` per working pixel of a field (measured: 232)."""
WORKING_MARGIN_BYTES = 32 * 2**20
"""The cut-outs (0.8 MB a cell on the 450 px canvas), their batch for the network, and the overlay's drawing."""
GREY_PHOTOGRAPH_REASON = (
    "a grey photograph cannot be scanned (white cells are found by their stain's colour): give a colour photograph "
    "of the stained smear"
)
"""Why a grey field is not scanned, and the fix. Not ``segmentation.modes.GREY_REASON``, whose error adds a
``--segment never`` fix: that is a ``predict`` option, and no door to a scan (``blastscope scan``, ``Classifier.scan``,
POST /scan) has it."""
ON_BLACK_REASON = (
    "a single cut-out cell on black, not a smear photograph: classify it with `blastscope predict` "
    "(POST /predict, Classifier.predict)"
)
"""Why an image already on black (:func:`~blastscope.segmentation.is_on_black`) is not scanned, and the fix: scanning
would take it for a field, rescale it and cut its cell out again, and so call it unlike ``predict`` does."""

Classify = Callable[[Sequence[np.ndarray]], np.ndarray]
"""Cut-outs (SxSx3 uint8 on black) -> probabilities (N, C) in the operating point's class order."""


def working_factor(width: int, height: int, red_cell_diameter: float | None = None) -> float:
    """Working px per photograph px: red cells brought to ``RED_CELL_ON_CANVAS`` px (never enlarged), and the copy
    within ``MAX_WORKING_PIXELS``."""
    cap = math.sqrt(MAX_WORKING_PIXELS / (width * height))
    return min(1.0, RED_CELL_ON_CANVAS / field_diameter(width, height, red_cell_diameter), cap)


def field_diameter(width: int, height: int, red_cell_diameter: float | None) -> float:
    """The red-cell diameter (photograph px): the one given, else 1/6.4 of the longer side (a BCCD field's).

    Raises
    ------
    BlastscopeError
        When ``red_cell_diameter`` is given and not a size above 2 px.
    """
    if red_cell_diameter is None:
        return max(width, height) * FIELD_FRACTION
    if not math.isfinite(red_cell_diameter) or red_cell_diameter <= 2:
        raise BlastscopeError(f"red cell diameter {red_cell_diameter} px is not usable; give it in pixels (> 2)")
    return float(red_cell_diameter)


def scan_working_bytes(width: int, height: int, red_cell_diameter: float | None = None) -> int:
    """Peak bytes a scan of a ``width`` x ``height`` photograph takes beyond the decoded photograph itself.

    The working copy's segmentation (``SEGMENTATION_BYTES_PER_PIXEL`` a working pixel; an image on black is refused
    on that copy before it is segmented), the display copy the overlay is drawn on (RGB and RGBA, 7 bytes a pixel),
    and ``WORKING_MARGIN_BYTES``.
    """
    factor = working_factor(width, height, red_cell_diameter)
    working = math.ceil(width * factor) * math.ceil(height * factor)
    return working * SEGMENTATION_BYTES_PER_PIXEL + OVERLAY_MAX_SIDE**2 * 7 + WORKING_MARGIN_BYTES


def scan_photograph(
    image: Image.Image,
    classify: Classify,
    point: OperatingPoint,
    *,
    name: str = "",
    red_cell_diameter: float | None = None,
    canvas_size: int = CNMC_CANVAS,
) -> ImageScan:
    """Find, cut out and classify every white cell of a bright-field smear photograph: :func:`find_cells`, then
    ``classify`` of its cut-outs, then :func:`judge_cells`.

    Parameters
    ----------
    image : PIL.Image.Image
        The decoded RGB photograph (any size: it is shrunk before anything grows with its pixels).
    classify : callable
        Cut-outs (SxSx3 uint8 on black) -> temperature-scaled probabilities (N, C) in ``point.classes`` order: the
        classifier's one inference path.
    point : OperatingPoint
        Decides each cell (:func:`~blastscope.inference.decision.decide`) and flags it uncertain
        (:func:`~blastscope.inference.decision.uncertain`).
    name : str
        The photograph's name in the results.
    red_cell_diameter : float, optional
        Red-cell diameter in the photograph, px (default: 1/6.4 of its longer side, as in BCCD fields).
    canvas_size : int
        Side of each cut-out's black canvas, px (C-NMC: 450).

    Returns
    -------
    ImageScan
        The classified cells (numbered in raster order), the cells left out with the reason (cut by the border,
        larger than the canvas), the verdict and the overlay.

    Raises
    ------
    ImageError
        As :func:`find_cells`.
    BlastscopeError
        When ``red_cell_diameter`` is not usable.
    """
    found = find_cells(image, name=name, red_cell_diameter=red_cell_diameter, canvas_size=canvas_size)
    kept = [cell.canvas for cell in found.kept]
    probabilities = np.asarray(classify(kept)) if kept else np.empty((0, len(point.classes)))
    return judge_cells(found, probabilities, point)


@dataclass(frozen=True, slots=True)
class FoundCells:
    """The white cells found in one photograph, before they are classified (:func:`find_cells`).

    Attributes
    ----------
    image : PIL.Image.Image
        The RGB photograph, for the overlay.
    name : str
    factor : float
        Working px per photograph px.
    diameter : float
        Red-cell diameter in the photograph, px.
    canvas_size : int
    found : list of FoundCell
        Every white cell found.
    kept : list of FoundCell
        Those to classify, in raster order: within the border and fitting on the canvas.
    """

    image: Image.Image
    name: str
    factor: float
    diameter: float
    canvas_size: int
    found: list[FoundCell]
    kept: list[FoundCell]


def find_cells(
    image: Image.Image, *, name: str = "", red_cell_diameter: float | None = None, canvas_size: int = CNMC_CANVAS
) -> FoundCells:
    """Every white cell of a smear photograph, cut out onto black; parameters as :func:`scan_photograph`'s. Apart
    from classifying, so that the cells of several photographs can be classified together (one person's).

    Raises
    ------
    ImageError
        Named ``name``, when the image is one cell on black (:func:`~blastscope.segmentation.is_on_black`), grey or
        in colour: ``ON_BLACK_REASON``, it is ``predict``'s to classify; or when it is a grey field
        (:func:`~blastscope.segmentation.modes.is_grey`): its white cells are found by their stain's colour, so it
        would be scanned wrongly (``GREY_PHOTOGRAPH_REASON``); or when ``red_cell_diameter`` is not below its shorter
        side: no whole white cell (a red cell across at least) could lie in it, so none would be found.
    BlastscopeError
        When ``red_cell_diameter`` is not usable in any photograph (not a number above 2 px).
    """
    rgb_image = image.convert("RGB") if image.mode != "RGB" else image
    width, height = rgb_image.size
    diameter = field_diameter(width, height, red_cell_diameter)
    if diameter >= min(width, height):  # a given one, or the default for a strip over 6.4 times as long as high
        raise ImageError(
            name,
            f"red-cell diameter {diameter:g} px is not below this {width}x{height} photograph's shorter side, so no "
            "whole white cell (at least a red cell across) could lie in it and none would be found; give the red "
            f"cells' size in its pixels, above 2 and below {min(width, height)} px (by default 1/6.4 of the longer "
            f"side: {field_diameter(width, height, None):.0f} px)",
        )
    factor = working_factor(width, height, red_cell_diameter)
    working = _shrunk(rgb_image, factor)
    if is_on_black(working):
        raise ImageError(name, ON_BLACK_REASON)
    if is_grey(working):
        raise ImageError(name, GREY_PHOTOGRAPH_REASON)
    found = find_white_cells(
        working,
        canvas_size=canvas_size,
        scale=RED_CELL_ON_CANVAS / diameter / factor,
        red_cell_diameter=diameter * factor,
        keep_cut=True,
    )
    kept = [cell for cell in found if not cell.cut_by_border and cell.cutout.found]
    return FoundCells(rgb_image, name, factor, diameter, canvas_size, list(found), kept)


def judge_cells(found: FoundCells, probabilities: np.ndarray, point: OperatingPoint) -> ImageScan:
    """The scan of ``found``, its kept cells' ``probabilities`` (N, C) decided at ``point``, with the overlay."""
    factor, canvas_size = found.factor, found.canvas_size
    width, height = found.image.size
    labels, referred = decide(probabilities, point), uncertain(probabilities, point)
    cells = tuple(
        ScannedCell(
            index=index,
            box=_photo_box(cell, factor, width, height),
            centroid=(cell.centroid[0] / factor, cell.centroid[1] / factor),
            outline=_outline(cell, factor),
            label=point.classes[label],
            probabilities=dict(zip(point.classes, map(float, row), strict=True)),
            referred=bool(flag),
            canvas=cell.canvas,
        )
        for index, (cell, label, row, flag) in enumerate(
            zip(found.kept, labels, probabilities, referred, strict=True), 1
        )
    )
    skipped = tuple(
        SkippedCell(
            box=_photo_box(cell, factor, width, height),
            centroid=(cell.centroid[0] / factor, cell.centroid[1] / factor),
            outline=_outline(cell, factor),
            cut_by_border=cell.cut_by_border,
            reason="cut by the image border" if cell.cut_by_border else _too_large(cell, canvas_size),
        )
        for cell in found.found
        if cell.cut_by_border or not cell.cutout.found
    )
    scan = ImageScan(
        file=found.name,
        size=(width, height),
        cells=cells,
        skipped=skipped,
        positive_class=point.positive_class,
        threshold=point.threshold if point.binary else None,
        decided_by=point.origin(),
        red_cell_diameter=found.diameter,
        overlay=Image.new("RGB", (1, 1)),  # drawn from the finished scan just below
    )
    return replace(scan, overlay=draw_overlay(found.image, scan, point.classes))


def _shrunk(image: Image.Image, factor: float) -> np.ndarray:
    """The photograph at ``factor`` of its size (area-averaged, so no aliasing), as an HxWx3 uint8 array."""
    if factor >= 1.0:
        return np.asarray(image)
    size = (max(16, round(image.width * factor)), max(16, round(image.height * factor)))
    return np.asarray(image.resize(size, Image.Resampling.BOX))


def _photo_box(cell: FoundCell, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The working box in photograph px, outward-rounded and within the photograph."""
    x0, y0, x1, y1 = cell.box
    return (
        max(0, math.floor(x0 / factor)),
        max(0, math.floor(y0 / factor)),
        min(width, math.ceil(x1 / factor)),
        min(height, math.ceil(y1 / factor)),
    )


def _outline(cell: FoundCell, factor: float) -> np.ndarray:
    """The longest boundary of the cell's mask, as (K, 2) ``(x, y)`` photograph px (pixel centres)."""
    contours = find_contours(np.pad(cell.mask, 1).astype(np.float32), 0.5)
    if not contours:
        return np.empty((0, 2), np.float32)
    rows, cols = max(contours, key=len).T - 1
    x0, y0 = cell.box[:2]
    return np.stack([(cols + x0 + 0.5) / factor - 0.5, (rows + y0 + 0.5) / factor - 0.5], axis=1).astype(np.float32)


def _too_large(cell: FoundCell, canvas_size: int) -> str:
    return f"larger than the {canvas_size} px canvas at C-NMC's scale (a clump, or a wrong red-cell diameter)"
