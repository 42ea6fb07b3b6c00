"""Segment the one white cell of a crop and cut it out onto black, as the C-NMC 2019 organisers did.

Single-cell crops from other laboratories keep their natural background (red cells, plasma); a model trained on
C-NMC cells sees only the cell on black. :func:`segment_cell` finds the white cell nearest the crop's centre
(nucleus and cytoplasm, see :mod:`blastscope.segmentation.field`) and returns it centred on a black square canvas at
the input's pixel scale (no per-cell zoom; see :mod:`blastscope.segmentation.canvas` for how the scale relates to
C-NMC's). Images that are already cut-outs on black are only re-centred.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastscope.segmentation.background import cell_on_black_mask, is_on_black
from blastscope.segmentation.canvas import CNMC_CANVAS, check_canvas
from blastscope.segmentation.field import (
    SegmentedCell,
    cut_out,
    label_white_cells,
    not_found,
)
from blastscope.segmentation.settings import (
    CROP_FRACTION,
    DEFAULT_SETTINGS,
    WHITE_CELL_IN_RED_CELLS,
    SegmentationSettings,
    checked_diameter,
    red_cell_area,
)
from blastscope.segmentation.stains import as_rgb


def segment_cell(
    image: np.ndarray,
    *,
    canvas_size: int = CNMC_CANVAS,
    scale: float = 1.0,
    red_cell_diameter: float | None = None,
    settings: SegmentationSettings = DEFAULT_SETTINGS,
) -> SegmentedCell:
    """Find the white cell of a single-cell image and return it centred on a black square canvas.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB image holding one white cell (more may be partly visible): a crop of a smear photograph with
        its natural background, or a cut-out already on black (then only re-centred).
    canvas_size : int
        Side of the square canvas, px (C-NMC: 450).
    scale : float
        Canvas px per input px (1.0 keeps the input's scale; cells are never zoomed one by one).
    red_cell_diameter : float, optional
        Typical red-cell diameter in the input, px; sizes used to tell nuclei from platelets and lobes from cells
        scale with it. Default: a quarter of the crop's shorter side (a crop about twice its cell's width); when
        the central cell and the cells touching it are together much larger than that implies (a tighter crop, a
        lobed nucleus split apart), their size divided by 1.8 (white cells are 1.5-2 red cells across).
    settings : SegmentationSettings
        Thresholds and sizes.

    Returns
    -------
    SegmentedCell
        ``found=True`` with the canvas, its mask, the box and mask in input pixels; or ``found=False``, a black
        canvas and the reason (no nucleus, or a cell larger than the canvas). The cell chosen is the one under the
        image centre, else the nearest one not cut by the border, else the nearest.

    Raises
    ------
    ImageError
        When ``image`` is not an 8-bit RGB array of at least 16x16 px.
    BlastscopeError
        When ``canvas_size``, ``scale`` or ``red_cell_diameter`` is not usable.
    """
    check_canvas(canvas_size, scale)
    rgb = as_rgb(image)
    if is_on_black(rgb):
        return _segment_on_black(rgb, canvas_size, scale)
    diameter = checked_diameter(red_cell_diameter, min(rgb.shape[:2]) * CROP_FRACTION)
    labels = label_white_cells(rgb, red_cell_diameter=diameter, settings=settings)
    if labels.count == 0:
        least = round(settings.min_nucleus_area * red_cell_area(diameter))
        return not_found(
            canvas_size,
            f"no white cell found: no haematoxylin-stained nucleus of at least {least} px "
            f"(threshold {labels.nucleus_threshold:.2f} OD; red-cell diameter taken as {diameter:.0f} px)",
            scale,
        )
    index = _central(labels.cells, labels.cut_by_border)
    if red_cell_diameter is None:
        # The cells touching the central one may be its own lobes, split because the crop is tighter than assumed
        # (its red cells larger than a quarter of it). A white cell is 1.5-2 red cells across: if that cluster says
        # the red cells are clearly larger, segment again at that scale.
        clustered = _cluster_diameter(labels.cells, index, 0.1 * diameter) / WHITE_CELL_IN_RED_CELLS
        if clustered > 1.5 * diameter:
            again = label_white_cells(rgb, red_cell_diameter=clustered, settings=settings)
            if again.count:
                labels, index = again, _central(again.cells, again.cut_by_border)
    window = ndi.find_objects(labels.cells)[index - 1]
    rows, cols = window
    mask = labels.cells[window] == index
    y, x = np.nonzero(mask)
    centroid = (float(x.mean() + cols.start), float(y.mean() + rows.start))
    box = (cols.start, rows.start, cols.stop, rows.stop)
    others = labels.count - 1
    how = "white cell found by stain" + (f" ({others} other white cell(s) in the image left out)" if others else "")
    return cut_out(rgb, mask, box, centroid, bool(labels.cut_by_border[index - 1]), canvas_size, scale, how)


def _central(cells: np.ndarray, cut: np.ndarray) -> int:
    """The label of the cell under the image centre, else the nearest uncut one, else the nearest one."""
    height, width = cells.shape
    under = int(cells[height // 2, width // 2])
    if under:
        return under
    labels = np.arange(1, len(cut) + 1)
    centres = np.asarray(ndi.center_of_mass(cells > 0, cells, labels)).reshape(-1, 2)
    distance = np.hypot(centres[:, 0] - (height - 1) / 2, centres[:, 1] - (width - 1) / 2)
    return int(labels[np.lexsort((distance, cut))[0]])


def _cluster_diameter(cells: np.ndarray, index: int, gap: float) -> float:
    """Equivalent diameter (px) of cell ``index`` together with every cell within ``gap`` px of it, directly or in a
    chain."""
    cluster = cells == index
    while True:
        near = ndi.distance_transform_edt(~cluster) <= max(2.0, gap)
        touching = np.unique(cells[near & (cells > 0)])
        grown = np.isin(cells, touching)
        if grown.sum() == cluster.sum():
            return float(2 * np.sqrt(cluster.sum() / np.pi))
        cluster = grown


def _segment_on_black(rgb: np.ndarray, canvas_size: int, scale: float) -> SegmentedCell:
    """A cut-out already on black: its largest bright component, re-centred on the canvas."""
    mask = cell_on_black_mask(rgb)
    if not mask.any():
        return not_found(canvas_size, "no cell: the image is black (on-black background and no bright pixels)", scale)
    rows, cols = ndi.find_objects(mask.astype(np.int8))[0]
    box = (cols.start, rows.start, cols.stop, rows.stop)
    box_mask = mask[rows, cols]
    y, x = np.nonzero(box_mask)
    centroid = (float(x.mean() + cols.start), float(y.mean() + rows.start))
    edge = bool(mask[[0, -1], :].any() or mask[:, [0, -1]].any())
    how = "image is already a cut-out on black: re-centred, not re-segmented"
    return cut_out(rgb, box_mask, box, centroid, edge, canvas_size, scale, how)
