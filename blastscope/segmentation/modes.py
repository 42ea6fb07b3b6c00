"""Whether a cell image is cut out before it reaches the model: ``--segment auto|always|never``.

The one step every door applies between decoding and resizing (training, ``evaluate``, ``predict``, ``serve``, the
Python API and the ONNX export's consumers alike), so a run sees the same kind of image wherever it is used:

- ``never``: the image as decoded (runs recorded before segmentation existed were trained this way);
- ``auto`` (default): images already on black, as C-NMC cells are (:func:`~blastscope.segmentation.is_on_black`),
  stay as they are; an image with a natural background has its white cell cut out onto black
  (:func:`~blastscope.segmentation.segment_cell`);
- ``always``: every image is segmented; one already on black is only re-centred.

A cell that cannot be found raises :class:`CellNotFoundError` with the reason, which the data layer reports as that
file's :class:`~blastscope.errors.ImageError`: it is skipped and listed, never classified as a black canvas. The mode
is recorded with a run as ``Preprocessing.segment`` (:mod:`blastscope.data.preprocessing`, which lists the modes and
checks them without loading the image-analysis libraries this module needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blastscope.errors import BlastscopeError, ImageError
from blastscope.segmentation.background import CELL_LEVEL, is_grey, is_on_black, lacks_stain_colour
from blastscope.segmentation.canvas import CNMC_CANVAS
from blastscope.segmentation.cell import segment_cell
from blastscope.segmentation.stains import as_rgb

SEGMENTATION_VERSION = 5
"""Part of the decoded-image cache's keys: raise it when a change to the segmentation changes its cut-outs or which
images have a cell (2: a crop's red-cell diameter measured on it, its light source fitted over the whole crop; 3: a
cut-out on black whose cell reaches the border is read as on black, and unlit pixels are never stain; 4: a photograph
in a black frame, its lit part mostly pale background, is not on black; 5: a grey image on black has no stained
cell)."""
MAX_SEGMENT_PIXELS = 2_000_000
"""Largest image (pixels) a single cell is cut out of. Its cell must fit the 450 px C-NMC canvas at the photo's own
scale, so a larger image is a field, not a crop around one cell; and segmentation peaks at
:data:`SEGMENT_PEAK_BYTES_PER_PIXEL`, about 0.5 GB at this size."""
SEGMENT_PEAK_BYTES_PER_PIXEL = 260
"""Peak memory of :func:`~blastscope.segmentation.segment_cell` per input pixel: 243 bytes measured with tracemalloc
on synthetic smear crops of 300-1000 px (float64 stain maps, labels, distance transforms), plus a margin."""
GREY_REASON = "a grey image cannot be segmented by stain: give a colour image"
"""The cause :class:`CellNotFoundError` gives for a grey image that would need segmenting (scans have their own);
:data:`GREY_WITHOUT_SEGMENTING` says when ``--segment never`` is the fix instead."""
GREY_WITHOUT_SEGMENTING = "if the cell is already cut out onto black"
GREY_ON_BLACK_REASON = (
    "no stained cell: what lies on the black background has no colour, and a cell of a stained smear has; give the "
    "colour image"
)
"""The reason for a grey image on black: no stained cell, e.g. a white square, which efficientnet_lite0_measured
called HEM at p = 0.91 (session 23), or a cell converted to grey, unlike every cell a run was trained on."""
GREY_ON_BLACK_WITHOUT_SEGMENTING = "to classify it as it is"


class CellNotFoundError(BlastscopeError):
    """No white cell could be cut out of an image that needed it.

    Attributes
    ----------
    cause : str
        Why, in one line, with the fix anyone giving the image can apply.
    without_segmenting : str or None
        When classifying the image without segmentation (``--segment never``) is a fix, what for, e.g. "to classify
        it as it is". Only whoever chose the segment mode can apply it: a web page's user cannot.
    reason : str
        ``cause``, and the ``--segment never`` fix where there is one: the line a command or the Python API shows.
    """

    def __init__(self, cause: str, without_segmenting: str | None = None) -> None:
        self.cause, self.without_segmenting = cause, without_segmenting
        self.reason = cause if without_segmenting is None else f"{cause}, or --segment never {without_segmenting}"
        super().__init__(self.reason)


@dataclass(frozen=True, slots=True)
class CellImage:
    """The full-size image the model is to see (before resizing), and whether it is blastscope's cut-out.

    Attributes
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB: the input itself, or its cell centred on a black square canvas.
    segmented : bool
        True when ``image`` is :func:`~blastscope.segmentation.segment_cell`'s canvas.
    white_cells : int or None
        Whole white cells segmentation found in the input (``SegmentedCell.white_cells``): more than one means an
        image given as one cell held several (a smear photograph) and only one of them is ``image``. None where not
        counted (not segmented, or already on black).
    """

    image: np.ndarray
    segmented: bool
    white_cells: int | None = None


def cell_for_model(image: np.ndarray, mode: str, red_cell_diameter: float | None = None) -> CellImage:
    """Apply ``mode`` to one decoded image.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB image of one cell: a C-NMC-like cut-out on black, or a crop with its natural background.
    mode : {"auto", "always", "never"}
        See the module's docstring.
    red_cell_diameter : float, optional
        Red-cell diameter in the image, px (``Preprocessing.red_cell_diameter``); default: measured on the image
        (:func:`~blastscope.segmentation.segment_cell`).

    Returns
    -------
    CellImage
        The input unchanged (``never``; ``auto`` on black), or its white cell on a black square canvas: 450 px
        (C-NMC's side) at the input's own pixel scale for a natural background, the input's longer side for an image
        already on black (re-centred, never zoomed).

    Raises
    ------
    CellNotFoundError
        When segmentation is needed and finds no cell (with :func:`~blastscope.segmentation.segment_cell`'s reason),
        the cell is larger than the canvas, the image is over :data:`MAX_SEGMENT_PIXELS` or under 16 px a side, it is
        grey and not on black (:func:`is_grey`: no colour for the stains to be told apart by), or
        (``auto``) an image on black has no cell pixel at all, or what an image on black shows lacks stain colour
        (:func:`~blastscope.segmentation.background.lacks_stain_colour`, :data:`GREY_ON_BLACK_REASON`).
    BlastscopeError
        For an unknown mode, or a ``red_cell_diameter`` of 2 px or less.
    """
    if mode == "never":
        return CellImage(image, False)
    if mode not in ("auto", "always"):
        raise BlastscopeError(f"segment mode {mode!r} is unknown: use auto, always or never")
    try:
        rgb = as_rgb(image)
    except ImageError as error:
        raise CellNotFoundError(f"cannot look for a cell: {error.reason}") from None
    on_black = is_on_black(rgb)
    if on_black and lacks_stain_colour(rgb):
        raise CellNotFoundError(GREY_ON_BLACK_REASON, GREY_ON_BLACK_WITHOUT_SEGMENTING)
    if mode == "auto" and on_black:
        if not (rgb.max(axis=2) >= CELL_LEVEL).any():
            raise CellNotFoundError("no cell: the image is black (on-black background and no bright pixels)")
        return CellImage(image, False)
    height, width = rgb.shape[:2]
    if height * width > MAX_SEGMENT_PIXELS:
        raise CellNotFoundError(
            f"{width}x{height} px is too large to cut one cell out of (over {MAX_SEGMENT_PIXELS / 1e6:g} megapixels); "
            "crop the image around the cell, or scan it as a smear field"
        )
    if not on_black and is_grey(rgb):
        raise CellNotFoundError(GREY_REASON, GREY_WITHOUT_SEGMENTING)
    canvas = max(height, width) if on_black else CNMC_CANVAS
    cell = segment_cell(rgb, canvas_size=canvas, red_cell_diameter=red_cell_diameter)
    if not cell.found:
        raise CellNotFoundError(cell.reason)
    return CellImage(cell.canvas, True, cell.white_cells)


def segmenting_bytes(pixels: int, mode: str) -> int:
    """Peak memory (bytes) that :func:`cell_for_model` may take on an image of ``pixels`` pixels in ``mode``."""
    return 0 if mode == "never" else min(pixels, MAX_SEGMENT_PIXELS) * SEGMENT_PEAK_BYTES_PER_PIXEL
