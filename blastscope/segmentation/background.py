"""Is an image already a C-NMC-style cut-out (a cell on black), or a photograph with its natural background?

C-NMC 2019 cells were segmented by the challenge organisers and pasted onto a black square: the border and most of
the canvas are near-black. Images like that need no segmentation (``--segment auto`` skips them); photographs of
smears, or crops of them, have a bright background and do.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastscope.segmentation.stains import BLACK_LEVEL, as_rgb

CELL_LEVEL = 12
"""A pixel whose brightest channel reaches this (8-bit) is cell, below it the black canvas C-NMC cells are cut out
onto: the one cut every step that tells cell from canvas uses (stain fits, crop checks, OD zeroing, the ONNX text)."""
PALE_LEVEL = 160  # a pixel whose every channel reaches this is pale: a bright-field background, never C-NMC cell
STAIN_CHROMA = 8
"""Largest median chroma (8-bit levels) of a cut-out on black read as colourless, not a stained cell: over cnmc-dev's
6,371 cells the lowest median is 35 levels (``benchmarks/RESULTS.md``, session 24), while a grey image's tint, white
balance off by a few levels or JPEG chroma noise stays within 3-4."""
GREY_TOLERANCE = 2
"""Largest channel difference (8-bit levels, |R-G| and |G-B| over the whole image) of an image taken as grey: colour
deconvolution separates stains by their colour, so it has nothing to work on in such an image (JPEG chroma noise on a
grey photograph stays within a level or two)."""
BORDER_BAND = 0.02  # the border checked is this fraction of the shorter side wide (at least 1 px)


def is_on_black(
    image: np.ndarray,
    *,
    level: int = BLACK_LEVEL,
    border_fraction: float = 0.5,
    black_fraction: float = 0.25,
    pale_fraction: float = 0.25,
    field_fraction: float = 0.4,
) -> bool:
    """Tell whether ``image`` looks like a C-NMC cell: on a near-black background, not a smear field in a black frame.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 (or HxWx4) uint8 RGB image.
    level : int
        A pixel is near-black when its brightest channel is below this (0-255).
    border_fraction : float
        At least this fraction of the border band (2% of the shorter side) must be near-black...
    black_fraction : float
        ...and at least this fraction of the whole image. C-NMC cells cover at most about a third of their canvas, but
        a crop of one may cut its cell at one or two sides (half its border and a quarter of its area stay black),
        while bright-field photographs have no near-black pixel at all (none in BCCD's 364 fields or 372 white-cell
        boxes), so the bounds are loose.
    pale_fraction, field_fraction : float
        ...unless at least ``field_fraction`` of the image is lit (not near-black) and at least ``pale_fraction`` of
        that is pale (every channel at least :data:`PALE_LEVEL`): a smear field seen through a black frame (an
        eyepiece circle, a masked border) is dark at its border too, but lit over most of the picture and mostly
        pale background there (48-100% in each of BCCD's 364 fields cut to a circle, none in every fifth cnmc-dev
        cell). A white cell cut out of a smear onto a canvas may have pale cytoplasm, but fills a small part of it;
        a grey image (:func:`is_grey`) is never read as such a field, as a grey cut-out may be pale.

    Returns
    -------
    bool
        True for C-NMC-like cut-outs, False for bright-field photographs and crops with natural background.

    Raises
    ------
    ImageError
        When ``image`` is not an 8-bit RGB array of at least 16x16 px.
    """
    rgb = as_rgb(image)
    dark = rgb.max(axis=2) < level
    band = max(1, int(round(BORDER_BAND * min(dark.shape))))
    border = np.concatenate(
        [dark[:band].ravel(), dark[-band:].ravel(), dark[band:-band, :band].ravel(), dark[band:-band, -band:].ravel()]
    )
    if border.mean() < border_fraction or dark.mean() < black_fraction:
        return False
    lit = ~dark
    if lit.mean() < field_fraction or is_grey(rgb):  # a grey cut-out may be pale: only colour tells a field here
        return True
    pale = (rgb.min(axis=2) >= PALE_LEVEL) & lit
    return bool(pale.sum() < pale_fraction * lit.sum())


def is_grey(rgb: np.ndarray) -> bool:
    """Whether an HxWx3 uint8 image has no colour to deconvolve: every pixel's ``|R-G|`` and ``|G-B|`` are at most
    :data:`GREY_TOLERANCE`."""
    channels = rgb[..., :3].astype(np.int16)
    return bool(
        np.abs(channels[..., 0] - channels[..., 1]).max() <= GREY_TOLERANCE
        and np.abs(channels[..., 1] - channels[..., 2]).max() <= GREY_TOLERANCE
    )


def lacks_stain_colour(rgb: np.ndarray) -> bool:
    """Whether what is lit in an HxWx3 uint8 image on black (brightest channel at least :data:`CELL_LEVEL`) is
    colourless: its median chroma (largest minus smallest channel) is at most :data:`STAIN_CHROMA` levels, so a few
    coloured pixels (a scale bar, an edge) or a slight tint do not make a grey image a stained cell. False when nothing
    is lit."""
    channels = rgb[..., :3]
    brightest = channels.max(axis=2)
    lit = brightest >= CELL_LEVEL
    chroma = brightest.astype(np.int16) - channels.min(axis=2)
    return bool(lit.any() and np.median(chroma[lit]) <= STAIN_CHROMA)


def cell_on_black_mask(image: np.ndarray, level: int = CELL_LEVEL) -> np.ndarray:
    """The cell of a cut-out on black: the largest bright component, holes filled.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB image of a cell on black.
    level : int
        Pixels whose brightest channel is at least this belong to the cell.

    Returns
    -------
    numpy.ndarray
        HxW bool mask; all False when no pixel reaches ``level``.
    """
    bright = as_rgb(image).max(axis=2) >= level
    labels, count = ndi.label(bright)
    if count == 0:
        return bright
    sizes = ndi.sum(bright, labels, index=np.arange(1, count + 1))
    return ndi.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
