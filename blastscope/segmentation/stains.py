"""Stain maps of a bright-field blood-smear photograph: light source, optical density, haematoxylin and blueness.

A Romanowsky-stained smear (Giemsa, Wright, May-Grünwald-Giemsa) has three kinds of pixels the segmentation must tell
apart: bright background (plasma, glass), red cells (pink: eosin) and white cells (a violet nucleus in a pale blue or
lilac cytoplasm). Everything here is measured relative to the local light source, so uneven illumination (vignetting,
a colour cast) does not move the thresholds:

* :func:`background_white`: the light source per pixel, a smooth surface fitted to the background.
* optical density ``-ln(I / I0)`` per channel (Beer-Lambert), on a lightly smoothed image.
* colour deconvolution (Ruifrok & Johnston 2001) with scikit-image's haematoxylin-eosin-DAB matrix
  (:data:`skimage.color.hed_from_rgb`, the matrix of :func:`skimage.color.rgb2hed`): its haematoxylin channel marks
  nuclei; in Romanowsky stains the red cells' eosin falls mostly in its "DAB" channel.
* blueness: how much bluer than the background a pixel is, as the drop of CIE 1976 L*a*b* ``b*`` of the
  white-normalised image. Nucleus and cytoplasm of a white cell are both bluer than the background, red cells and
  their pale centres are not: this is what tells a white cell's faint cytoplasm from plasma and red cells.

References
----------
Ruifrok, A. C., & Johnston, D. A. (2001). Quantification of histochemical staining by color deconvolution.
*Analytical and Quantitative Cytology and Histology*, 23(4), 291-299.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb2lab

from blastscope.errors import ImageError

WHITE_GRID = 64  # the light source is estimated on a grid with about this many blocks along the longer side
WHITE_QUANTILE = 90  # background blocks are about as bright as this percentile of their neighbourhood
WHITE_WINDOW = 0.35  # neighbourhood side, as a fraction of the image's longer side (a field's default)
WHITE_FLOOR = 0.8  # background is at least this bright relative to the image's bright level (vignetting stays above)
BACKGROUND_QUANTILE = 90
"""Pixels at least as bright (relative to the light source) as this percentile are background: the brightest tenth,
since a tight crop around a white cell may hold little more background than that."""
MIN_SIDE = 16  # smaller images hold no cell worth segmenting
BLACK_LEVEL = 24  # a pixel whose brightest channel is below this is near-black (JPEG noise on black stays below it)


@dataclass(frozen=True, slots=True)
class StainMaps:
    """Per-pixel stain measurements of one RGB image (all arrays HxW unless noted, float64).

    Attributes
    ----------
    white : numpy.ndarray
        HxWx3 light source (local background) in 0-255 units.
    density : numpy.ndarray
        HxWx3 optical density ``-ln((I + 1) / (I0 + 1))`` per channel of the smoothed image; about 0 on background.
    haematoxylin : numpy.ndarray
        Haematoxylin amount (optical-density units) from colour deconvolution; high in nuclei.
    red_cell : numpy.ndarray
        The deconvolution's third ("DAB") channel, which in Romanowsky stains carries the red cells' eosin.
    blueness : numpy.ndarray
        Background ``b*`` minus the pixel's ``b*`` (CIE L*a*b* of the white-normalised image): positive where the
        pixel is bluer than the background (white-cell nucleus and cytoplasm), negative on red cells.
    blueness_noise : float
        Median absolute deviation of the blueness over background pixels: the noise level thresholds scale with.
    background : numpy.ndarray
        Bool: the pixels taken as background (plasma, glass): the brightest relative to the light source, from the
        :data:`BACKGROUND_QUANTILE` th percentile of their least bright channel up.
    """

    white: np.ndarray
    density: np.ndarray
    haematoxylin: np.ndarray
    red_cell: np.ndarray
    blueness: np.ndarray
    blueness_noise: float
    background: np.ndarray


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is an 8-bit RGB (or RGBA, alpha dropped) array and return its HxWx3 RGB view.

    Raises
    ------
    ImageError
        When the array is not uint8 HxWx3 / HxWx4 or smaller than 16 px on a side.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError("<array>", f"expected an 8-bit RGB image (uint8, HxWx3); got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageError(
            "<array>", f"image {image.shape[1]}x{image.shape[0]} px is too small: use {MIN_SIDE} px or more"
        )
    return image[..., :3]


def background_white(rgb: np.ndarray, window: float = WHITE_WINDOW) -> np.ndarray:
    """Estimate the light source of every pixel of a bright-field image.

    The image is block-averaged to about :data:`WHITE_GRID` blocks along its longer side. Background blocks are
    those among the brightest of their neighbourhood (:data:`WHITE_QUANTILE` th percentile over a window of
    ``window`` of the image) and not far below the image's bright level (:data:`WHITE_FLOOR`), so that a large dark
    cell or a crowd of red cells never passes for background. Brightness is a block's least bright channel: every
    Romanowsky stain absorbs in the green, so pale cytoplasm and red cells fall clearly below the background there
    even where the sum of their channels does not (on a tight crop, the sum let the cytoplasm pass for background).
    A quadratic surface per channel, fitted to the background blocks by least squares (twice, dropping blocks well
    below the first fit), models the illumination: vignetting and colour gradients are smooth, and the surface
    bridges the areas under cells.

    Parameters
    ----------
    rgb : numpy.ndarray
        HxWx3 image, uint8 or float in 0-255.
    window : float
        Side of the neighbourhood, as a fraction of the longer side. A field's default is about two red cells; a
        crop around one cell uses 1 (the whole crop), since its white cell alone may fill most of a smaller window.

    Returns
    -------
    numpy.ndarray
        HxWx3 float64 light source in 0-255 units, at least 1.
    """
    height, width = rgb.shape[:2]
    factor = max(1, int(round(max(height, width) / WHITE_GRID)))
    rows, cols = height // factor, width // factor
    small = rgb[: rows * factor, : cols * factor].astype(np.float64)
    small = small.reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3))
    brightness = small.min(axis=2)
    if window >= 1.0:  # the whole image: one level for every block (a percentile filter that size would be slow)
        local = np.full(brightness.shape, np.percentile(brightness, WHITE_QUANTILE))
    else:
        size = max(3, int(round(window * max(rows, cols))))
        local = ndi.percentile_filter(brightness, WHITE_QUANTILE, size=size, mode="reflect")
    background = (brightness >= 0.97 * local) & (brightness >= WHITE_FLOOR * np.percentile(brightness, WHITE_QUANTILE))
    centres_y = (np.arange(rows) + 0.5) * factor
    centres_x = (np.arange(cols) + 0.5) * factor
    terms = _quadratic_terms(centres_y[:, None], centres_x[None, :], height, width)
    for _ in range(2):
        if background.sum() < 4 * terms.shape[-1]:  # too little background to fit a surface: one colour for all
            return np.broadcast_to(np.median(small[background | (brightness >= local)], axis=0), rgb.shape).copy()
        coefficients, *_ = np.linalg.lstsq(terms[background], small[background], rcond=None)
        fitted = terms @ coefficients
        background &= brightness >= 0.95 * fitted.min(axis=2)
    full = _quadratic_terms(np.arange(height)[:, None] + 0.5, np.arange(width)[None, :] + 0.5, height, width)
    return np.maximum(full @ coefficients, 1.0)


def _quadratic_terms(y: np.ndarray, x: np.ndarray, height: int, width: int) -> np.ndarray:
    """The terms 1, x, y, x^2, xy, y^2 of a quadratic surface at (y, x), coordinates scaled to -1..1; (..., 6)."""
    y = np.broadcast_to(2 * y / height - 1, np.broadcast_shapes(y.shape, x.shape))
    x = np.broadcast_to(2 * x / width - 1, y.shape)
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


def stain_maps(image: np.ndarray, smoothing: float = 2.0, window: float = WHITE_WINDOW) -> StainMaps:
    """Measure light source, optical density, haematoxylin, red-cell stain and blueness of every pixel.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB bright-field image (white cells on a bright background).
    smoothing : float
        Standard deviation, in pixels, of the Gaussian applied before measuring (suppresses JPEG and sensor noise).
    window : float
        The light source's neighbourhood, a fraction of the longer side (:func:`background_white`).

    Returns
    -------
    StainMaps
        The maps, each HxW (``white`` and ``density`` HxWx3).

    Raises
    ------
    ImageError
        When ``image`` is not an 8-bit RGB array of at least 16x16 px.
    """
    rgb = as_rgb(image).astype(np.float64)
    white = background_white(rgb, window)
    smooth = ndi.gaussian_filter(rgb, (smoothing, smoothing, 0)) if smoothing > 0 else rgb
    density = -np.log((smooth + 1.0) / (white + 1.0))
    stains = density @ hed_from_rgb  # Ruifrok & Johnston: optical densities times the inverse stain matrix
    unlit = _unlit(rgb, smoothing)
    relative = np.clip(smooth / white, 0.0, 1.5)  # not clipped at 1: the background's noise must stay measurable
    b_star = rgb2lab(relative)[..., 2]
    brightness = relative.min(axis=2)  # the least bright channel, as for the light source
    background = brightness >= np.percentile(brightness, BACKGROUND_QUANTILE)
    reference = float(np.median(b_star[background]))
    noise = float(np.median(np.abs(b_star[background] - reference)))
    return StainMaps(
        white=white,
        density=density,
        haematoxylin=np.where(unlit, 0.0, stains[..., 0]),
        red_cell=np.where(unlit, 0.0, stains[..., 2]),
        blueness=np.where(unlit, 0.0, reference - b_star),
        blueness_noise=noise,
        background=background,
    )


def _unlit(rgb: np.ndarray, smoothing: float) -> np.ndarray:
    """HxW bool: near-black pixels (brightest channel below :data:`BLACK_LEVEL`) and those smoothing blurs them into.

    Where no light came through (a black canvas around a cut-out cell, a dark vignette) the optical density is
    maximal but says nothing about stain: left in, it reads as the darkest nucleus of the image. Such pixels read
    as unstained background instead.
    """
    unlit = rgb.max(axis=2) < BLACK_LEVEL
    reach = int(np.ceil(2 * smoothing)) + 1
    return ndi.binary_dilation(unlit, iterations=reach) if unlit.any() else unlit
