"""Segment the one white cell of a crop and cut it out onto black, as the C-NMC 2019 organisers did.

Single-cell crops from other laboratories keep their natural background (red cells, plasma); a model trained on
C-NMC cells sees only the cell on black. :func:`segment_cell` finds the white cell nearest the crop's centre
(nucleus and cytoplasm, see :mod:`blastscope.segmentation.field`) and returns it centred on a black square canvas at
the input's pixel scale (no per-cell zoom; see :mod:`blastscope.segmentation.canvas` for how the scale relates to
C-NMC's). Images that are already cut-outs on black are only re-centred.

A crop may be cut tight around its cell or wide around it; the same cell should come out the same either way. So the
crop's red-cell diameter, which every size of the segmentation scales with, is measured on the crop
(:mod:`blastscope.segmentation.scale`) unless given, and its light source is fitted over the whole crop (a crop covers
a small part of the microscope's field, so its illumination is nearly even, and its white cell may fill most of any
smaller neighbourhood).
"""

from __future__ import annotations

from dataclasses import replace

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
from blastscope.segmentation.scale import CropScale, crop_scale
from blastscope.segmentation.settings import DEFAULT_SETTINGS, SegmentationSettings, checked_diameter
from blastscope.segmentation.stains import as_rgb, stain_maps

CROP_WINDOW = 1.0
"""The light source's neighbourhood on a crop: all of it (:func:`~blastscope.segmentation.stains.background_white`)."""


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
        scale with it. Default: measured on the crop (:func:`~blastscope.segmentation.scale.crop_scale`: its whole
        red cells, else its central nucleus, else a quarter of its shorter side), so that the margin a crop is cut
        with barely changes the cell found.
    settings : SegmentationSettings
        Thresholds and sizes.

    Returns
    -------
    SegmentedCell
        ``found=True`` with the canvas, its mask, the box and mask in input pixels, and a reason that gives the
        red-cell diameter used and how it was found; or ``found=False``, a black canvas and the reason (what was
        missing: any stain, a nucleus standing out from the noise, one large enough; or a cell larger than the
        canvas). The cell chosen is the one under the image centre, else the nearest one not cut by the border,
        else the nearest; ``white_cells`` counts the whole white cells found (more than one: the image is not of one
        cell, and only the chosen one is cut out).

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
    maps = stain_maps(rgb, settings.smoothing, window=CROP_WINDOW)
    if red_cell_diameter is None:
        found_scale = crop_scale(maps, settings)
    else:
        found_scale = CropScale(checked_diameter(red_cell_diameter, 0.0), "given")
    labels = label_white_cells(rgb, red_cell_diameter=found_scale.diameter, settings=settings, maps=maps)
    if labels.count == 0:
        return not_found(canvas_size, f"no white cell found: {labels.missing}", scale)
    index = _central(labels.cells, labels.cut_by_border)
    window = ndi.find_objects(labels.cells)[index - 1]
    rows, cols = window
    mask = labels.cells[window] == index
    y, x = np.nonzero(mask)
    centroid = (float(x.mean() + cols.start), float(y.mean() + rows.start))
    box = (cols.start, rows.start, cols.stop, rows.stop)
    others = labels.count - 1
    how = f"white cell found by stain (red-cell diameter {found_scale.diameter:.0f} px, {found_scale.source})" + (
        f"; {others} other white cell(s) in the image left out" if others else ""
    )
    cell = cut_out(rgb, mask, box, centroid, bool(labels.cut_by_border[index - 1]), canvas_size, scale, how)
    return replace(cell, white_cells=int((~labels.cut_by_border).sum()))


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
