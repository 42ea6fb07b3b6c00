"""Find every white cell of a bright-field blood-smear photograph: nucleus and cytoplasm, touching cells apart.

The method, step by step (sizes in red-cell diameters ``d``, see :class:`SegmentationSettings`):

1. **Stains** (:mod:`blastscope.segmentation.stains`): light source, optical density, haematoxylin by colour
   deconvolution (Ruifrok & Johnston 2001) and blueness relative to the background.
2. **Nuclei** (:mod:`blastscope.segmentation.nuclei`): haematoxylin above Otsu's threshold (Otsu 1979; never below
   ``nucleus_floor``), standing out from the background's noise (not a field of noise), opened; specks dropped;
   fragments closer than ``2 * fragment_gap`` merged, and small groups (lobes of segmented nuclei) merged into the
   nearest group within ``lobe_gap``. Groups smaller than ``min_nucleus_area`` are platelets, not nuclei.
3. **Cytoplasm**: pixels bluer than the background (hysteresis threshold: pale cytoplasm counts when connected to
   clearly blue pixels) grown from the nuclei, plus each nucleus's convex hull (the space between lobes); opened to
   cut thin bridges to red-cell rims, holes filled, and kept within reach of a nucleus. Red cells (pink) and plasma
   (as blue as the background) stay out.
4. **Touching cells**: marker-controlled watershed (Beucher & Meyer 1993) on the distance transform of the cell
   region, one marker per nucleus, so that touching cells part at their waist; neighbouring regions whose union is
   convex (solidity >= ``merge_solidity``), or that share a long border (``merge_contact``) while one holds only a
   lobe-sized nucleus (``lobe_max``), are parts of one cell (a granulocyte's lobes) and are joined again.
5. **Clean-up**: each cell is opened, reduced to its main piece and its holes filled; a cell touching the image edge
   is flagged as cut by the border.

References
----------
Ruifrok, A. C., & Johnston, D. A. (2001). Quantification of histochemical staining by color deconvolution.
*Analytical and Quantitative Cytology and Histology*, 23(4), 291-299.

Otsu, N. (1979). A threshold selection method from gray-level histograms. *IEEE Transactions on Systems, Man, and
Cybernetics*, 9(1), 62-66.

Beucher, S., & Meyer, F. (1993). The morphological approach to segmentation: the watershed transformation. In
E. R. Dougherty (Ed.), *Mathematical Morphology in Image Processing* (pp. 433-481). Marcel Dekker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from blastscope.segmentation.background import cell_on_black_mask, is_on_black
from blastscope.segmentation.canvas import CNMC_CANVAS, check_canvas, place_on_canvas
from blastscope.segmentation.nuclei import (
    NUCLEUS_COHERENCE,
    NUCLEUS_CONTRAST,
    dilate,
    label_nuclei,
    nucleus_contrast,
    nucleus_threshold,
    opening,
    stain_coherence,
)
from blastscope.segmentation.settings import (
    DEFAULT_SETTINGS,
    FIELD_FRACTION,
    SegmentationSettings,
    checked_diameter,
    red_cell_area,
)
from blastscope.segmentation.stains import StainMaps, as_rgb, stain_maps

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class SegmentedCell:
    """One cell cut out onto a black square canvas, as C-NMC cells are, or the reason there is none.

    Attributes
    ----------
    canvas : numpy.ndarray
        SxSx3 uint8: the cell centred on black. All black when ``found`` is False: check ``found`` first.
    mask : numpy.ndarray
        SxS bool: the cell's pixels on the canvas.
    box : tuple of int or None
        ``(x0, y0, x1, y1)`` of the cell in input pixels (ends exclusive); None when nothing was found.
    found : bool
        Whether a cell was found and fits the canvas.
    reason : str
        One line: how the cell was found, or why not.
    box_mask : numpy.ndarray or None
        Bool mask of the cell inside ``box``, in input pixels (shape ``(y1 - y0, x1 - x0)``).
    centroid : tuple of float or None
        ``(x, y)`` of the cell's mask in input pixels.
    cut_by_border : bool
        The cell touches the input's edge, so part of it may be missing.
    scale : float
        Canvas pixels per input pixel.
    white_cells : int or None
        How many whole white cells (not cut by the border) :func:`~blastscope.segmentation.segment_cell` found in its
        input, of which it cut out one: more than one means the input was not a single-cell image (a smear
        photograph, say). None where not counted (a cut-out already on black, a cell of a field).
    """

    canvas: np.ndarray
    mask: np.ndarray
    box: Box | None
    found: bool
    reason: str
    box_mask: np.ndarray | None = None
    centroid: tuple[float, float] | None = None
    cut_by_border: bool = False
    scale: float = 1.0
    white_cells: int | None = None

    def input_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The cell's mask on the whole input, an HxW bool array for an input of ``shape`` ``(H, W)``."""
        full = np.zeros(shape[:2], bool)
        if self.box is not None and self.box_mask is not None:
            x0, y0, x1, y1 = self.box
            full[y0:y1, x0:x1] = self.box_mask
        return full


@dataclass(frozen=True, slots=True)
class FoundCell:
    """A white cell found in a smear field.

    Attributes
    ----------
    box : tuple of int
        ``(x0, y0, x1, y1)`` in input pixels, ends exclusive.
    mask : numpy.ndarray
        Bool mask of the cell inside ``box`` (shape ``(y1 - y0, x1 - x0)``), nucleus and cytoplasm.
    centroid : tuple of float
        ``(x, y)`` of the mask, input pixels.
    area : int
        Cell area, px.
    nucleus_area : int
        Area of its nucleus (haematoxylin-positive part), px.
    cut_by_border : bool
        The cell touches the image's edge: part of it is missing.
    cutout : SegmentedCell
        The cell on its black canvas (``cutout.found`` is False, with the reason, when it does not fit).
    """

    box: Box
    mask: np.ndarray
    centroid: tuple[float, float]
    area: int
    nucleus_area: int
    cut_by_border: bool
    cutout: SegmentedCell

    @property
    def canvas(self) -> np.ndarray:
        """The SxSx3 uint8 cut-out (all black when it does not fit: see ``cutout.found``)."""
        return self.cutout.canvas


@dataclass(frozen=True, slots=True)
class WhiteCellLabels:
    """Label images of the white cells of one image.

    Attributes
    ----------
    cells : numpy.ndarray
        HxW int32: 0 outside white cells, ``k`` on cell ``k`` (1-based, raster order of first pixel).
    nuclei : numpy.ndarray
        HxW int32: the nucleus of cell ``k`` labelled ``k``.
    cut_by_border : numpy.ndarray
        Bool, one per cell (index ``k - 1``): the cell touches the image edge.
    red_cell_diameter : float
        The red-cell diameter (px) the sizes were scaled by.
    nucleus_threshold : float
        Haematoxylin optical density above which pixels counted as nuclear (nan when the image is uniform).
    missing : str
        When no white cell was found, what was missing, in words (the image is uniform, nothing stands out from its
        noise, no stained region is large enough for a nucleus...); empty otherwise.
    """

    cells: np.ndarray
    nuclei: np.ndarray
    cut_by_border: np.ndarray
    red_cell_diameter: float
    nucleus_threshold: float
    missing: str = ""

    @property
    def count(self) -> int:
        """Number of white cells."""
        return len(self.cut_by_border)


def default_field_diameter(shape: tuple[int, ...]) -> float:
    """Red-cell diameter (px) assumed for a smear field of ``shape`` when none is given: 1/6.4 of the longer side."""
    return max(shape[0], shape[1]) * FIELD_FRACTION


def label_white_cells(
    image: np.ndarray,
    *,
    red_cell_diameter: float | None = None,
    settings: SegmentationSettings = DEFAULT_SETTINGS,
    maps: StainMaps | None = None,
) -> WhiteCellLabels:
    """Segment every white cell (nucleus and cytoplasm) of a bright-field image into a label image.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB photograph with a bright background (a smear field or a crop of one). A cut-out already on
        black (:func:`~blastscope.segmentation.background.is_on_black`) gives its one cell, nucleus not labelled.
    red_cell_diameter : float, optional
        Typical red-cell diameter in px; every size of ``settings`` scales with it. Default: 1/6.4 of the longer
        side, right for BCCD-like fields (640x480 px at 100x).
    settings : SegmentationSettings
        Thresholds and sizes.
    maps : StainMaps, optional
        Precomputed :func:`~blastscope.segmentation.stains.stain_maps` of ``image`` (same ``settings.smoothing``).

    Returns
    -------
    WhiteCellLabels
        Cell and nucleus label images and per-cell border flags.

    Raises
    ------
    ImageError
        When ``image`` is not an 8-bit RGB array of at least 16x16 px.
    BlastscopeError
        When ``red_cell_diameter`` is not a positive size.
    """
    rgb = as_rgb(image)
    diameter = checked_diameter(red_cell_diameter, default_field_diameter(rgb.shape))
    if maps is None and is_on_black(rgb):  # a cut-out already: its cell is what is not black
        return _on_black_labels(rgb, diameter)
    maps = maps if maps is not None else stain_maps(rgb, settings.smoothing)
    threshold = nucleus_threshold(maps.haematoxylin, settings)
    if np.isnan(threshold):
        return _no_cells(rgb.shape, diameter, threshold, "the image is uniform: no stained region at all")
    contrast = nucleus_contrast(maps, threshold)
    coherence = stain_coherence(maps.haematoxylin, threshold, settings.smoothing)
    if contrast < NUCLEUS_CONTRAST or coherence < NUCLEUS_COHERENCE:
        return _no_cells(
            rgb.shape,
            diameter,
            threshold,
            f"nothing stands out from the image's noise (its most stained pixels lie {contrast:.1f} noise levels "
            f"above the background, {coherence:.0%} of them in regions wider than noise's specks; a nucleus: "
            f"{NUCLEUS_CONTRAST:g} or more, and {NUCLEUS_COHERENCE:.0%} or more)",
        )
    nuclei = label_nuclei(maps.haematoxylin, threshold, diameter, settings)
    if not nuclei.any():
        least = round(settings.min_nucleus_area * red_cell_area(diameter))
        missing = (
            f"no haematoxylin-stained nucleus of at least {least} px (stain above {threshold:.2f} OD; red-cell "
            f"diameter {diameter:.0f} px)"
        )
        return _no_cells(rgb.shape, diameter, threshold, missing)
    region = _cell_region(maps, nuclei, diameter, settings)
    cells = watershed(-ndi.distance_transform_edt(region), nuclei, mask=region)
    cells = _merge_lobed_cells(cells, nuclei, diameter, settings)
    cells = _clean(cells, nuclei, diameter, settings)
    if not cells.any():
        return _no_cells(rgb.shape, diameter, threshold, "no nucleus kept a cell around it after clean-up")
    nuclei = np.where(cells > 0, cells, 0) * (nuclei > 0)
    edge = np.zeros(cells.shape, bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    cut = np.zeros(int(cells.max()), bool)
    cut[np.unique(cells[edge & (cells > 0)]) - 1] = True
    return WhiteCellLabels(cells.astype(np.int32), nuclei.astype(np.int32), cut, diameter, threshold)


def find_white_cells(
    image: np.ndarray,
    *,
    canvas_size: int = CNMC_CANVAS,
    scale: float = 1.0,
    red_cell_diameter: float | None = None,
    keep_cut: bool = False,
    settings: SegmentationSettings = DEFAULT_SETTINGS,
) -> list[FoundCell]:
    """Find every white cell of a smear photograph and cut each out onto a black canvas.

    Red cells and platelets are ignored (platelets are haematoxylin-positive but smaller than
    ``settings.min_nucleus_area`` red-cell areas); touching white cells are split; cells cut by the image border
    are flagged and, unless ``keep_cut``, left out.

    Parameters
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB smear photograph (bright background).
    canvas_size : int
        Side of each cut-out's square canvas, px (C-NMC: 450).
    scale : float
        Canvas px per input px, the same for every cell (see :mod:`blastscope.segmentation.canvas`).
    red_cell_diameter : float, optional
        Typical red-cell diameter, px (default 1/6.4 of the longer side, as in BCCD fields).
    keep_cut : bool
        Also return cells cut by the image border (their ``cut_by_border`` is True).
    settings : SegmentationSettings
        Thresholds and sizes.

    Returns
    -------
    list of FoundCell
        In raster order of each cell's first pixel.

    Raises
    ------
    ImageError
        When ``image`` is not an 8-bit RGB array of at least 16x16 px.
    BlastscopeError
        When ``canvas_size``, ``scale`` or ``red_cell_diameter`` is not usable.
    """
    check_canvas(canvas_size, scale)
    rgb = as_rgb(image)
    labels = label_white_cells(rgb, red_cell_diameter=red_cell_diameter, settings=settings)
    found = []
    for index, window in enumerate(ndi.find_objects(labels.cells), start=1):
        if window is None or (labels.cut_by_border[index - 1] and not keep_cut):
            continue
        found.append(cell_from_labels(rgb, labels, index, window, canvas_size, scale))
    return found


def cell_from_labels(
    rgb: np.ndarray,
    labels: WhiteCellLabels,
    index: int,
    window: tuple[slice, slice],
    canvas_size: int,
    scale: float,
) -> FoundCell:
    """Build the :class:`FoundCell` of cell ``index`` of ``labels`` (``window``: its slices from find_objects)."""
    rows, cols = window
    box = (cols.start, rows.start, cols.stop, rows.stop)
    mask = labels.cells[window] == index
    y, x = np.nonzero(mask)
    centroid = (float(x.mean() + cols.start), float(y.mean() + rows.start))
    cut = bool(labels.cut_by_border[index - 1])
    cutout = cut_out(rgb, mask, box, centroid, cut, canvas_size, scale, how="white cell found by stain")
    return FoundCell(
        box=box,
        mask=mask,
        centroid=centroid,
        area=int(mask.sum()),
        nucleus_area=int((labels.nuclei[window] == index).sum()),
        cut_by_border=cut,
        cutout=cutout,
    )


def cut_out(
    rgb: np.ndarray,
    mask: np.ndarray,
    box: Box,
    centroid: tuple[float, float],
    cut: bool,
    canvas_size: int,
    scale: float,
    how: str,
) -> SegmentedCell:
    """Place one cell on its canvas, or say why it cannot be (it is larger than the canvas at this scale)."""
    placed = place_on_canvas(rgb, mask, box, canvas_size, scale)
    if placed is None:
        width, height = box[2] - box[0], box[3] - box[1]
        return not_found(
            canvas_size,
            f"the cell is {round(width * scale)}x{round(height * scale)} px at scale {scale:g}, larger than the "
            f"{canvas_size} px canvas; use a larger canvas_size or a smaller scale",
            scale,
            box=box,
            box_mask=mask,
            centroid=centroid,
            cut=cut,
        )
    canvas, canvas_mask = placed
    reason = how + ("; it touches the image border, so part of it may be missing" if cut else "")
    return SegmentedCell(canvas, canvas_mask, box, True, reason, mask, centroid, cut, scale)


def not_found(
    canvas_size: int,
    reason: str,
    scale: float = 1.0,
    *,
    box: Box | None = None,
    box_mask: np.ndarray | None = None,
    centroid: tuple[float, float] | None = None,
    cut: bool = False,
) -> SegmentedCell:
    """A :class:`SegmentedCell` with ``found=False``, a black canvas and the reason."""
    return SegmentedCell(
        canvas=np.zeros((canvas_size, canvas_size, 3), np.uint8),
        mask=np.zeros((canvas_size, canvas_size), bool),
        box=box,
        found=False,
        reason=reason,
        box_mask=box_mask,
        centroid=centroid,
        cut_by_border=cut,
        scale=scale,
    )


def _on_black_labels(rgb: np.ndarray, diameter: float) -> WhiteCellLabels:
    """The one cell of a cut-out on black (its nucleus is not told apart: ``nuclei`` stays empty)."""
    mask = cell_on_black_mask(rgb)
    if not mask.any():
        return _no_cells(rgb.shape, diameter, float("nan"), "the image is black: no bright pixel")
    cut = bool(mask[[0, -1], :].any() or mask[:, [0, -1]].any())
    return WhiteCellLabels(mask.astype(np.int32), np.zeros(mask.shape, np.int32), np.array([cut]), diameter, np.nan)


def _no_cells(shape: tuple[int, ...], diameter: float, threshold: float, missing: str) -> WhiteCellLabels:
    empty = np.zeros(shape[:2], np.int32)
    return WhiteCellLabels(empty, empty.copy(), np.zeros(0, bool), diameter, threshold, missing)


def _closed_nuclei(nuclei: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The union of the nuclei closed by a disk of ``radius`` px (bridging the gaps between lobes, one nucleus at a
    time), and each closed nucleus's equivalent diameter (index ``k - 1``)."""
    union = np.zeros(nuclei.shape, bool)
    diameters = []
    pad = int(np.ceil(radius)) + 2
    for label, window in enumerate(ndi.find_objects(nuclei), start=1):
        rows = slice(max(0, window[0].start - pad), min(nuclei.shape[0], window[0].stop + pad))
        cols = slice(max(0, window[1].start - pad), min(nuclei.shape[1], window[1].stop + pad))
        local = np.pad(nuclei[rows, cols] == label, pad)
        closed = ndi.distance_transform_edt(dilate(local, radius)) > radius
        closed = (closed | local)[pad:-pad, pad:-pad]
        union[rows, cols] |= closed
        diameters.append(2 * np.sqrt(closed.sum() / np.pi))
    return union, np.asarray(diameters)


def _cell_region(maps: StainMaps, nuclei: np.ndarray, diameter: float, settings: SegmentationSettings) -> np.ndarray:
    """Pixels of some white cell: nuclei (lobes bridged) and the blue cytoplasm connected to them, within reach."""
    strong = max(settings.blueness_strong, settings.noise_strong * maps.blueness_noise)
    nuclear = nuclei > 0
    weak = max(settings.blueness_weak, settings.noise_weak * maps.blueness_noise)
    cytoplasm = (maps.blueness >= strong) & ~nuclear & (maps.red_cell < settings.red_cell_limit)
    if cytoplasm.any():  # cut a blurred cytoplasm edge part-way up (edge_level), not at the noise floor
        weak = max(weak, settings.edge_level * float(np.median(maps.blueness[cytoplasm])))
    weak = min(weak, strong)
    closed, nucleus_diameters = _closed_nuclei(nuclei, settings.lobe_gap * diameter / 2)
    blue = (
        apply_hysteresis_threshold(maps.blueness, weak, strong) & (maps.red_cell < settings.red_cell_limit)
    ) | nuclear
    region = ndi.binary_fill_holes(opening(blue, settings.opening * diameter) | closed)
    components, _ = ndi.label(region)
    region = np.isin(components, np.unique(components[nuclear]))
    distance, indices = ndi.distance_transform_edt(~nuclear, return_indices=True)
    nearest = nuclei[indices[0], indices[1]]
    reach = np.maximum(settings.min_reach * diameter, settings.reach * nucleus_diameters)
    return region & (distance <= np.concatenate([[0.0], reach])[nearest])


def _merge_lobed_cells(
    cells: np.ndarray, nuclei: np.ndarray, diameter: float, settings: SegmentationSettings
) -> np.ndarray:
    """Join touching cell regions that are parts of one cell: their union is convex (solidity at least
    ``merge_solidity``), or they share a long border (at least ``merge_contact`` times the smaller one's equivalent
    diameter) and the smaller one's nucleus is lobe-sized (below ``lobe_max`` red-cell areas). Two touching round
    cells meet at a waist: a short border and a dented union; two large nuclei are two cells."""
    cells = cells.copy()
    lobe_max = settings.lobe_max * red_cell_area(diameter)
    while True:
        best, pair = 1.0, None
        areas = np.bincount(cells.ravel())
        nuclear = np.bincount(cells[nuclei > 0], minlength=len(areas))
        for label, window in enumerate(ndi.find_objects(cells), start=1):
            if window is None:
                continue
            for other, contact in _contacts(cells, label, window).items():
                union = (cells == label) | (cells == other)
                rows, cols = ndi.find_objects(union.astype(np.int8))[0]
                local = union[rows, cols]
                solidity = local.sum() / convex_hull_image(local).sum()
                smaller = 2 * np.sqrt(min(areas[label], areas[other]) / np.pi)
                lobe = min(nuclear[label], nuclear[other]) < lobe_max
                evidence = max(solidity / settings.merge_solidity, lobe * contact / smaller / settings.merge_contact)
                if evidence >= best:
                    best, pair = evidence, (label, other)
        if pair is None:
            return cells
        cells[cells == pair[1]] = pair[0]


def _contacts(cells: np.ndarray, label: int, window: tuple[slice, slice]) -> dict[int, int]:
    """For each label greater than ``label`` touching cell ``label``: how many of its pixels touch it."""
    rows = slice(max(0, window[0].start - 1), window[0].stop + 1)
    cols = slice(max(0, window[1].start - 1), window[1].stop + 1)
    local = cells[rows, cols]
    ring = ndi.binary_dilation(local == label) & (local > label)
    counts = np.bincount(local[ring])
    return {int(other): int(counts[other]) for other in np.flatnonzero(counts)}


def _clean(cells: np.ndarray, nuclei: np.ndarray, diameter: float, settings: SegmentationSettings) -> np.ndarray:
    """Open each cell, keep its piece holding most nucleus, fill its holes; relabel 1..n in raster order."""
    cleaned = np.zeros(cells.shape, np.int32)
    for label, window in enumerate(ndi.find_objects(cells), start=1):
        if window is None:
            continue
        mask = cells[window] == label
        size = 2 * np.sqrt(mask.sum() / np.pi)
        mask = opening(mask, max(settings.opening * diameter, settings.cell_opening * size))
        pieces, count = ndi.label(mask)
        if count == 0:
            continue
        nuclear = np.bincount(pieces[nuclei[window] > 0], minlength=count + 1)[1:]
        sizes = np.bincount(pieces.ravel(), minlength=count + 1)[1:]
        main = int(np.argmax(nuclear if nuclear.any() else sizes)) + 1
        mask = ndi.binary_fill_holes(pieces == main)
        target = cleaned[window]
        target[mask & (target == 0)] = label
    labels, first = np.unique(cleaned.ravel(), return_index=True)
    ordered = labels[labels > 0][np.argsort(first[labels > 0])]
    mapping = np.zeros(int(cleaned.max()) + 1, np.int32)
    mapping[ordered] = np.arange(1, len(ordered) + 1)
    return mapping[cleaned]
