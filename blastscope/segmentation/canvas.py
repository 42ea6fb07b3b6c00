"""A segmented cell, cut out and centred on a black square canvas the way C-NMC 2019 cells are.

Scale
-----
Cell size is a diagnostic cue (blasts are larger than normal lymphocytes), so a cell is never zoomed to fill its
canvas: every cell of an image is resampled by the same ``scale`` (canvas px per input px; 1.0 keeps input pixels).

How the input's pixel scale relates to C-NMC's: on their 450 px canvas, C-NMC cells measure (equivalent-circle
diameter, 600 cells of cnmc-dev) median 216 px for ALL blasts (5th-95th percentile 179-244 px) and 177 px for
normal HEM cells (146-238 px); no red cell is left in C-NMC to calibrate against. In a BCCD field (640x480 px,
100x objective) red cells are about 100 px and white cells 150-230 px, so at ``scale=1`` its cells come out in
C-NMC's size range. If C-NMC's normal cells are 9-11 um across, C-NMC has about 16-20 px per um, against about
13 px per um for BCCD (7.5 um red cells): ``scale`` of about 1.2-1.5 would match C-NMC more closely. That is an
estimate, not a calibration: for your own microscope, pick the ``scale`` that makes your normal lymphocytes come
out as large as C-NMC's HEM cells (about 177 px), and use the same ``scale`` for every image of that setup.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from blastscope.errors import BlastscopeError

CNMC_CANVAS = 450  # side of a C-NMC 2019 cell image, px


def check_canvas(canvas_size: int, scale: float) -> None:
    """Raise a :class:`~blastscope.errors.BlastscopeError` when the canvas side or the scale is not usable."""
    if int(canvas_size) != canvas_size or canvas_size < 16:
        raise BlastscopeError(f"canvas_size {canvas_size} is not usable; give a whole number of pixels, 16 or more")
    if not np.isfinite(scale) or scale <= 0:
        raise BlastscopeError(f"scale {scale} is not usable; give canvas pixels per input pixel, e.g. 1.0")


def place_on_canvas(
    rgb: np.ndarray, box_mask: np.ndarray, box: tuple[int, int, int, int], canvas_size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Cut the masked cell out of ``rgb`` and centre it on a black square.

    Parameters
    ----------
    rgb : numpy.ndarray
        HxWx3 uint8 input image.
    box_mask : numpy.ndarray
        Bool mask of the cell inside ``box`` (shape ``(y1 - y0, x1 - x0)``).
    box : tuple of int
        ``(x0, y0, x1, y1)`` in input pixels, ends exclusive.
    canvas_size : int
        Side of the square canvas, px.
    scale : float
        Canvas pixels per input pixel, the same for every cell (no per-cell zoom).

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(canvas, mask)``: SxSx3 uint8 with everything outside the cell black, and its SxS bool mask; the cell's
        bounding box is centred. None when the cell, at this scale, is larger than the canvas.
    """
    x0, y0, x1, y1 = box
    crop = rgb[y0:y1, x0:x1]
    mask = box_mask
    if scale != 1.0:
        shape = (max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale)))
        crop = resize(crop, shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
        crop = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
        mask = resize(box_mask.astype(np.float64), shape, order=1, anti_aliasing=scale < 1) >= 0.5
    height, width = mask.shape
    if height > canvas_size or width > canvas_size:
        return None
    canvas = np.zeros((canvas_size, canvas_size, 3), np.uint8)
    canvas_mask = np.zeros((canvas_size, canvas_size), bool)
    top, left = (canvas_size - height) // 2, (canvas_size - width) // 2
    canvas[top : top + height, left : left + width] = np.where(mask[..., None], crop, 0)
    canvas_mask[top : top + height, left : left + width] = mask
    return canvas, canvas_mask
