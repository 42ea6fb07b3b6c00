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

from blastscope.data.cache import DecodedCache, decode_resized
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.table import Cell
from blastscope.data.transforms import Transform
from blastscope.errors import DataError, ImageError

log = logging.getLogger(__name__)



class CellDataset(Dataset):
    """Cells as ``(normalised image tensor, class index)``.

    Every cell is decoded (and cached) when the dataset is built, in threads since Pillow releases the GIL while
    decoding. A file that cannot be read then is counted in ``skipped`` with its reason, logged, and left out, rather
    than crashing a DataLoader worker mid-epoch; the first epoch also reads warm cache entries. A file that breaks
    after that (deleted mid-run) raises its ImageError.
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
        self.cells, self.skipped = self._readable(cells, threads or min(8, os.cpu_count() or 1))
        self.targets = [self.classes.index(cell.label) for cell in self.cells]

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cell = self.cells[index]
        return self.transform(self._pixels(cell)), self.targets[index]

    def _pixels(self, cell: Cell) -> np.ndarray:
        size, interpolation = self.pre.input_size, self.pre.interpolation
        if self.cache is None:
            return decode_resized(cell.path, size, interpolation)
        return self.cache.load(cell.path, cell.digest, size, interpolation)

    def _readable(self, cells: Sequence[Cell], threads: int) -> tuple[list[Cell], list[tuple[Path, str]]]:
        def problem(cell: Cell) -> str | None:
            try:
                self._pixels(cell)
            except ImageError as error:
                return error.reason
            return None

        with ThreadPoolExecutor(max_workers=threads) as pool:
            problems = list(pool.map(problem, cells))
        readable = [cell for cell, reason in zip(cells, problems, strict=True) if reason is None]
        skipped = [(cell.path, reason) for cell, reason in zip(cells, problems, strict=True) if reason is not None]
        if skipped:
            path, reason = skipped[0]
            log.warning(
                "skipped %d of %d images that cannot be read, e.g. %s: %s", len(skipped), len(cells), path, reason
            )
        if cells and not readable:
            path, reason = skipped[0]
            raise DataError(f"none of the {len(cells)} images can be read, e.g. {path}: {reason}")
        return readable, skipped
