"""The split record: which cells sit in train, val and test, and the shares and summary table a person checks.

:class:`Split` is what every other split module produces or consumes; making, folding, reading, writing and checking
a split live beside it so that this module stays a plain record with its read-outs.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePath

from blastscope.data.discover import class_order
from blastscope.data.table import Cell
from blastscope.data.text_table import text_table

PARTS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class PartShare:
    """How many cells of one class a part holds, and which share of that class's cells that is."""

    part: str
    label: str
    cells: int
    share: float


@dataclass(slots=True)
class Split:
    """Cells per part (``train``/``val``/``test``) and the subject groups they were kept in.

    ``subject_level`` is False when cells were split one by one (no subject ids, or asked for): then cells of one
    person may sit on both sides and scores are optimistic. ``seed`` is None for a split read back from CSV.
    ``left_out`` holds the dataset's cells that a split CSV read against it puts in no part, so that counts of the
    dataset and of the parts can be told apart and said.
    """

    parts: dict[str, list[Cell]]
    groups: dict[str, str]
    subject_level: bool
    seed: int | None
    ratios: tuple[float, ...]
    classes: tuple[str, ...] = field(default=())
    left_out: list[Cell] = field(default_factory=list)

    def cells(self) -> Iterator[tuple[str, Cell]]:
        """Every ``(part, cell)`` pair in part order, so that files written from a split come out the same each time."""
        for part in PARTS:
            for cell in self.parts.get(part, []):
                yield part, cell

    def group_of(self, cell: Cell) -> str:
        """The subject group ``cell`` was kept in: its subject when unlinked, ``""`` when it has no subject."""
        return self.groups.get(cell.subject, cell.subject) if cell.subject is not None else ""

    @property
    def hash(self) -> str:
        """Stable across machines: the (path, part) pairs, paths taken relative to the folder that holds all cells.

        Names only: a dataset redrawn or re-exported under the same file names keeps it; :attr:`content_hash` tells
        those apart.
        """
        pairs = [(cell.path, part) for part, cell in self.cells()]
        base = os.path.commonpath([str(PurePath(path).parent) for path, _ in pairs]) if pairs else ""
        lines = sorted(f"{PurePath(os.path.relpath(path, base)).as_posix()}\t{part}\n" for path, part in pairs)
        return hashlib.blake2b("".join(lines).encode(), digest_size=8).hexdigest()

    @property
    def content_hash(self) -> str:
        """Which images sit in which part: the (part, digest) pairs, identical files once.

        A run is only as reusable as the pixels it learned from, so two splits are the same training data exactly when
        this agrees (ensemble members, a run ``compare`` would reuse); moving or renaming the files keeps it, other
        images under the old names change it.
        """
        lines = sorted({f"{part}\t{cell.digest}\n" for part, cell in self.cells()})
        return hashlib.blake2b("".join(lines).encode(), digest_size=8).hexdigest()

    def shares(self) -> list[PartShare]:
        """Achieved ratios per class: the split's targets are per class, so this is what to compare them with."""
        counts = {part: Counter(cell.label for cell in self.parts.get(part, [])) for part in PARTS}
        totals = sum(counts.values(), Counter())
        return [
            PartShare(part, label, counts[part][label], counts[part][label] / totals[label] if totals[label] else 0.0)
            for part in PARTS
            for label in self.classes or class_order(totals)
        ]

    def summary(self) -> str:
        """A table a person reads: cells (and share of the class) per part, and the subject groups in each part."""
        classes = self.classes or class_order(cell.label for _, cell in self.cells())
        by_part = defaultdict(dict)
        for share in self.shares():
            by_part[share.part][share.label] = share
        total = sum(len(cells) for cells in self.parts.values())
        rows = []
        for part in PARTS:
            cells = self.parts.get(part, [])
            row = [part] + [f"{by_part[part][label].cells:,} ({by_part[part][label].share:.1%})" for label in classes]
            row.append(f"{len(cells):,} ({len(cells) / total:.1%})" if total else "0")
            row.append(f"{len({self.group_of(cell) for cell in cells if cell.subject is not None}):,}")
            rows.append(row)
        ratios = " / ".join(f"{ratio:.0%}" for ratio in self.ratios)
        ratios = f"target {ratios}, seed {self.seed}" if self.seed is not None else f"read from CSV, ratios {ratios}"
        level = "by subject group" if self.subject_level else "BY IMAGE (cells of one subject may sit in several parts)"
        header = ["part", *classes, "total cells", "subject groups"]
        return f"split {self.hash}, {level}, {ratios}\n{text_table(header, rows)}"
