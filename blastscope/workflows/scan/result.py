"""What scanning one smear photograph found: each white cell's call, the cells left out, and the image's verdict.

The image verdict (:func:`verdict`) is a rule on the cell calls, in this order:

1. ``no_white_cell``: no whole white cell was classified (none found, or only cells cut by the border).
2. ``positive``: at least one cell is called the positive class (ALL) and is not uncertain: "ALL cells present".
3. ``refer``: no cell is confidently ALL but at least one is uncertain (its p(ALL) lies in the run's refer band,
   on either side of the threshold): "uncertain — refer" to a person.
4. ``negative``: every cell is confidently called the other class: "no ALL cell called".

Multi-class runs have no positive class: their verdict is ``classified``. One confident ALL call flags the image,
so the image-level call is exactly as good as the cell-level calls it rests on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from blastscope.metrics import class_display_name

Box = tuple[int, int, int, int]

VERDICTS = ("no_white_cell", "positive", "refer", "negative", "classified")
REFER_TEXT = "uncertain — refer"
"""What a cell in the refer band, and an image with no confident positive call but such a cell, are called: on the
overlay's banner (a cell's tag says "refer", short), in the verdict, on the web page and in ``predict``'s and
``serve``'s outputs alike."""


@dataclass(frozen=True, slots=True)
class ScannedCell:
    """One white cell of a photograph, classified.

    Attributes
    ----------
    index : int
        1-based number of the cell in the image (raster order of its first pixel), as written on the overlay.
    box : tuple of int
        ``(x0, y0, x1, y1)`` in photograph pixels, ends exclusive.
    centroid : tuple of float
        ``(x, y)`` of the cell's mask, photograph pixels.
    outline : numpy.ndarray
        (K, 2) float32 ``(x, y)`` points of the cell's boundary, photograph pixels.
    label : str
        The class decided at the operating point.
    probabilities : dict of str to float
        Probability of each class (temperature-scaled), in the run's class order.
    referred : bool
        p(positive) lies inside the run's refer band (:func:`blastscope.inference.decision.uncertain`).
    canvas : numpy.ndarray
        SxSx3 uint8: the cut-out on black that was classified.
    """

    index: int
    box: Box
    centroid: tuple[float, float]
    outline: np.ndarray
    label: str
    probabilities: dict[str, float]
    referred: bool
    canvas: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {
            "cell": self.index,
            "centroid_x": round(self.centroid[0], 1),
            "centroid_y": round(self.centroid[1], 1),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "label": self.label,
            "display_label": class_display_name(self.label),
            "probabilities": self.probabilities,
            "referred": self.referred,
        }


@dataclass(frozen=True, slots=True)
class SkippedCell:
    """A white cell found but not classified, and why (cut by the image border, or larger than the canvas)."""

    box: Box
    centroid: tuple[float, float]
    outline: np.ndarray
    cut_by_border: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        return {
            "centroid_x": round(self.centroid[0], 1),
            "centroid_y": round(self.centroid[1], 1),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "cut_by_border": self.cut_by_border,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ImageScan:
    """The white cells of one photograph, their calls, the image's verdict and the overlay that shows them.

    Attributes
    ----------
    file : str
        The photograph's name (path, upload name, or ``image N``).
    size : tuple of int
        ``(width, height)`` of the photograph, px.
    cells : tuple of ScannedCell
        The classified cells, numbered 1..m.
    skipped : tuple of SkippedCell
        Cells found but left out (cut by the border, or too large for the canvas).
    positive_class : str or None
        The run's positive class (None for multi-class runs).
    threshold : float or None
        The threshold on p(positive) that decided (None for multi-class runs).
    decided_by : str
        Where the operating point came from.
    red_cell_diameter : float
        Red-cell diameter (photograph px) the sizes were scaled by: given, or assumed from the image size.
    overlay : PIL.Image.Image
        RGB picture of the photograph with each cell's outline in its class's colour, tagged with its number, call
        and p(positive).
    """

    file: str
    size: tuple[int, int]
    cells: tuple[ScannedCell, ...]
    skipped: tuple[SkippedCell, ...]
    positive_class: str | None
    threshold: float | None
    decided_by: str
    red_cell_diameter: float
    overlay: Image.Image

    @property
    def n_positive(self) -> int:
        """Cells called the positive class (uncertain ones included)."""
        return sum(cell.label == self.positive_class for cell in self.cells)

    @property
    def n_referred(self) -> int:
        return sum(cell.referred for cell in self.cells)

    @property
    def n_cut_by_border(self) -> int:
        return sum(cell.cut_by_border for cell in self.skipped)

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS` (see the module's docstring for the rule)."""
        return verdict(self.cells, self.positive_class)

    @property
    def verdict_text(self) -> str:
        """The verdict as a person reads it, e.g. ``ALL cells present`` or ``uncertain — refer``."""
        return verdict_text(self.verdict, self.positive_class)

    def summary(self) -> str:
        """``n of m white cells called ALL`` with the uncertain and left-out cells, e.g. ``1 of 2 white cells called
        ALL (1 uncertain); 1 cut by the border, not classified``; ``no white cells found`` (or ``no whole white cell
        found; 1 cut by the border, not classified``) when none was classified, never ``0 of 0``."""
        m = len(self.cells)
        if m == 0:
            text = "no whole white cell found" if self.skipped else "no white cells found"
        elif self.positive_class is None:
            counts = {label: sum(cell.label == label for cell in self.cells) for label in self._labels()}
            text = f"{m} white cell{'s' * (m != 1)}: " + ", ".join(
                f"{n} {class_display_name(label)}" for label, n in counts.items()
            )
        else:
            name = class_display_name(self.positive_class)
            text = f"{self.n_positive} of {m} white cell{'s' * (m != 1)} called {name}"
        if self.n_referred:
            text += f" ({self.n_referred} uncertain)"
        left_out = [f"{self.n_cut_by_border} cut by the border"] if self.n_cut_by_border else []
        too_large = len(self.skipped) - self.n_cut_by_border
        left_out += [f"{too_large} too large for the canvas"] if too_large else []
        return text + (f"; {', '.join(left_out)}, not classified" if left_out else "")

    def _labels(self) -> list[str]:
        return sorted({cell.label for cell in self.cells})

    def to_dict(self) -> dict[str, Any]:
        """Everything but the overlay and the canvases, as JSON-ready types."""
        return {
            "file": self.file,
            "width": self.size[0],
            "height": self.size[1],
            "n_cells": len(self.cells),
            "n_positive": self.n_positive if self.positive_class is not None else None,
            "n_referred": self.n_referred,
            "n_cut_by_border": self.n_cut_by_border,
            "n_not_classified": len(self.skipped),
            "positive_class": self.positive_class,
            "verdict": self.verdict,
            "verdict_text": self.verdict_text,
            "summary": self.summary(),
            "threshold": self.threshold,
            "decided_by": self.decided_by,
            "red_cell_diameter": round(self.red_cell_diameter, 1),
            "cells": [cell.to_dict() for cell in self.cells],
            "not_classified": [cell.to_dict() for cell in self.skipped],
        }


def verdict(cells: tuple[ScannedCell, ...] | list[ScannedCell], positive_class: str | None) -> str:
    """The image verdict from its cell calls: one of :data:`VERDICTS`, by the rule in the module's docstring."""
    if not cells:
        return "no_white_cell"
    if positive_class is None:
        return "classified"
    if any(cell.label == positive_class and not cell.referred for cell in cells):
        return "positive"
    if any(cell.referred for cell in cells):
        return "refer"
    return "negative"


def verdict_text(code: str, positive_class: str | None) -> str:
    """The words for a verdict code, naming the positive class as people write it (ALL)."""
    name = class_display_name(positive_class) if positive_class is not None else "positive"
    return {
        "no_white_cell": "no white cell found",
        "positive": f"{name} cells present",
        "refer": REFER_TEXT,
        "negative": f"no {name} cell called",
        "classified": "white cells classified",
    }[code]
