"""The torch Dataset of cells: decoded once through the cache, transformed per sample."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from blastscope.data.cache import DecodedCache, ModelInput, decode_resized
from blastscope.data.people import require_subjects
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import SubjectColour
from blastscope.data.table import Cell
from blastscope.data.transforms import Transform
from blastscope.errors import DataError, ImageError

log = logging.getLogger(__name__)


class CellChangedError(ImageError):
    """A cell that was readable when its dataset was built but no longer is (changed, truncated or deleted mid-run).

    Its message stays one line also when it is raised in a DataLoader worker: PyTorch rebuilds a worker's exception
    in the main process as ``type(error)(text)``, with the worker's whole traceback as the text, whose last line is
    this class's name and the original message; that message is taken back out of it.
    """

    def __init__(self, path: object, reason: str | None = None) -> None:
        if reason is None:  # rebuilt by PyTorch from a worker's traceback
            last = str(path).rstrip().rsplit("\n", 1)[-1]
            path, _, reason = last.removeprefix(f"{type(self).__module__}.{type(self).__qualname__}: ").partition(": ")
            super().__init__(path, reason)
            return
        super().__init__(
            path,
            f"{reason}; it changed after training started: restore it and continue with `blastscope train --resume "
            "RUN_DIR` (finished epochs are kept), or remove it and start a new run",
        )


class CellDataset(Dataset):
    """Cells as ``(normalised image tensor, class index)``.

    Every cell is decoded (and cached) when the dataset is built, in threads since Pillow releases the GIL while
    decoding. A file that cannot be read then is counted in ``skipped`` with its reason, logged, and left out, rather
    than crashing a DataLoader worker mid-epoch; the first epoch also reads warm cache entries. A file that breaks
    after that (deleted mid-run) raises its ImageError. A cell that segmentation (``pre.segment``) cannot find is
    skipped the same way; ``segmented`` says, per readable cell, whether it was cut out of its background, and
    ``clipped`` lists the readable cells the ``--crop-fraction`` window cut into (the data module warns of them once
    per part: a run loads its training part more than once).

    With ``pre.colour_norm == "subject"`` each cell is normalised by the colour statistics of its subject's readable
    cells in this dataset (:class:`~blastscope.data.stain.SubjectColour`), fitted while the dataset is built; a
    subject-level split keeps a subject's cells in one part, so these are all of that person's cells. Raises
    ``DataError`` when a cell has no subject id then.
    """

    def __init__(
        self,
        cells: Sequence[Cell],
        classes: Sequence[str],
        pre: Preprocessing,
        transform: Transform,
        cache: DecodedCache | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        self.classes = tuple(classes)
        unknown = sorted({cell.label for cell in cells} - set(self.classes))
        if unknown:
            raise DataError(f"cells labelled {', '.join(unknown)} are not among the classes {', '.join(self.classes)}")
        self.pre = pre
        self.transform = transform
        self.cache = cache
        self.colour: SubjectColour | None = None
        if pre.colour_norm == "subject":
            require_subjects(cells, "the dataset", "train with --colour-norm none")
        self.clipped: list[Path] = []
        self.cells, self.skipped, self.segmented = self._readable(cells, threads or min(8, os.cpu_count() or 1))
        self.targets = [self.classes.index(cell.label) for cell in self.cells]

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Raises :class:`CellChangedError` for a cell that could be read when the dataset was built but no longer
        can."""
        cell = self.cells[index]
        try:
            pixels = self._pixels(cell)
        except ImageError as error:
            raise CellChangedError(error.path, error.reason) from None
        return self.transform(pixels), self.targets[index]

    def _pixels(self, cell: Cell) -> np.ndarray:
        pixels = self._input(cell).pixels
        return pixels if self.colour is None else self.colour(pixels, cell.subject)  # type: ignore[arg-type]

    def _input(self, cell: Cell) -> ModelInput:
        pre = self.pre
        if self.cache is None:
            return decode_resized(
                cell.path, pre.input_size, pre.interpolation, pre.segment, pre.crop_fraction, pre.red_cell_diameter
            )
        return self.cache.load(
            cell.path,
            cell.digest,
            pre.input_size,
            pre.interpolation,
            pre.segment,
            pre.crop_fraction,
            pre.red_cell_diameter,
        )

    def _readable(self, cells: Sequence[Cell], threads: int) -> tuple[list[Cell], list[tuple[Path, str]], list[bool]]:
        def outcome(cell: Cell) -> ModelInput | str:
            try:
                return self._input(cell)
            except ImageError as error:
                return error.reason

        with ThreadPoolExecutor(max_workers=threads) as pool:
            outcomes = list(pool.map(outcome, cells))
        readable = [cell for cell, got in zip(cells, outcomes, strict=True) if isinstance(got, ModelInput)]
        if self.pre.colour_norm == "subject":
            self.colour = SubjectColour.fit(
                (cell.subject, got.pixels)
                for cell, got in zip(cells, outcomes, strict=True)
                if isinstance(got, ModelInput)
            )
        segmented = [got.segmented for got in outcomes if isinstance(got, ModelInput)]
        self.clipped = [
            cell.path for cell, got in zip(cells, outcomes, strict=True) if isinstance(got, ModelInput) and got.clipped
        ]
        skipped = [(cell.path, got) for cell, got in zip(cells, outcomes, strict=True) if isinstance(got, str)]
        if skipped:
            path, reason = skipped[0]
            log.warning(
                "skipped %d of %d images that cannot be read, e.g. %s: %s", len(skipped), len(cells), path, reason
            )
        if cells and not readable:
            path, reason = skipped[0]
            raise DataError(f"none of the {len(cells)} images can be read, e.g. {path}: {reason}")
        return readable, skipped, segmented
