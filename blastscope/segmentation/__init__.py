"""Cut white cells out of bright-field blood-smear photographs onto black, the way C-NMC 2019 cells were.

A classifier trained on C-NMC cells (segmented by the challenge organisers, centred on a black 450 px square) scores
at chance on crops that keep their natural background; cut out onto black, the same crops score well. This package
does that cutting with classical, stain-aware image analysis (scikit-image, no network, no downloaded weights):

- :func:`segment_cell`: the white cell of a single-cell crop, centred on a black canvas, with its mask, or
  ``found=False`` and the reason.
- :func:`find_white_cells`: every white cell of a smear field (red cells and platelets ignored, touching cells
  split, cells cut by the border flagged), each with box, mask, centroid and cut-out.
- :func:`is_on_black`: whether an image is already a C-NMC-like cut-out (segment only where needed).
- :func:`label_white_cells`: the label images behind both, for measuring and drawing.
- :func:`cell_for_model`: the ``--segment auto|always|never`` step every command applies before resizing.
- :func:`crop_scale`: the red-cell diameter of a crop, measured on it (its whole red cells, else its nucleus), which
  every size of the segmentation scales with.

Scale: cells keep their physical size (one ``scale`` for every cell; see :mod:`blastscope.segmentation.canvas`).
"""

from blastscope.segmentation.background import cell_on_black_mask, is_on_black
from blastscope.segmentation.canvas import CNMC_CANVAS, place_on_canvas
from blastscope.segmentation.cell import segment_cell
from blastscope.segmentation.field import (
    FoundCell,
    SegmentedCell,
    WhiteCellLabels,
    find_white_cells,
    label_white_cells,
)
from blastscope.segmentation.modes import (
    CellImage,
    CellNotFoundError,
    cell_for_model,
    segmenting_bytes,
)
from blastscope.segmentation.scale import CropScale, crop_scale
from blastscope.segmentation.settings import DEFAULT_SETTINGS, SegmentationSettings
from blastscope.segmentation.stains import StainMaps, background_white, stain_maps

__all__ = [
    "CNMC_CANVAS",
    "DEFAULT_SETTINGS",
    "CellImage",
    "CellNotFoundError",
    "CropScale",
    "FoundCell",
    "SegmentationSettings",
    "SegmentedCell",
    "StainMaps",
    "WhiteCellLabels",
    "background_white",
    "cell_for_model",
    "cell_on_black_mask",
    "crop_scale",
    "find_white_cells",
    "is_on_black",
    "label_white_cells",
    "place_on_canvas",
    "segment_cell",
    "segmenting_bytes",
    "stain_maps",
]
