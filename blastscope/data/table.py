"""The cell table: what every other part of blastscope reads a dataset as."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Cell:
    """One distinct image of one cell.

    ``subject`` is the normalised subject id (upper case, e.g. ``"H3"``, ``"11"``) or ``None`` when the dataset carries
    none; ``digest`` is the hash of the file's bytes, used for de-duplication, leakage checks and the decoded cache.
    ``fixed_split`` pins a cell to a split part (e.g. the C-NMC preliminary test set on request).
    """

    path: Path
    label: str
    subject: str | None
    digest: str
    fixed_split: str | None = None


@dataclass(slots=True)
class CellTable:
    """A scanned dataset: distinct readable cells plus everything that was set aside and why.

    ``classes`` is the index order models use. For binary data the positive class (ALL for C-NMC) is last, so that
    class index 1 is "positive", as in the C-NMC label files (1 = ALL, 0 = HEM). ``subject_links`` pairs subject ids
    whose cells include byte-identical files (in C-NMC most likely one person filed under two ids); splits keep each
    linked set in one group. ``synthetic_seeds`` maps the digest of each cell ``blastscope synth`` drew (known by its
    PNG mark, read during the scan) to its seed, so the credit line names synthetic cells without reading them again.
    """

    root: Path
    cells: list[Cell]
    classes: tuple[str, ...]
    kind: str
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subject_links: list[tuple[str, str]] = field(default_factory=list)
    image_sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    synthetic_seeds: dict[str, str] = field(default_factory=dict)

    @property
    def has_subjects(self) -> bool:
        return all(cell.subject is not None for cell in self.cells)

    def class_index(self, label: str) -> int:
        return self.classes.index(label)
