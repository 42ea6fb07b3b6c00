"""Honest splits: whole subject groups per part, classes balanced, no identical file on two sides.

A split assigns *units* to parts: subject groups (subjects linked by identical files count as one, see
:func:`blastscope.data.discover.subject_groups`) or, when splitting by image, single cells. Units are placed by a
seeded greedy pass that puts each unit where it most reduces the squared deviation from the target cell count of
every class, and forces the last units of a class into parts still missing that class; the best of many seeded
orders wins. Groups here are mostly single-class, so per-class targets give stratification without splitting a
group; scikit-learn's group splitters allow only equal folds, not 60/20/20.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from blastscope.data.discover import class_order, subject_groups
from blastscope.data.table import Cell, CellTable
from blastscope.errors import BlastscopeError, DataError, LeakageError

PARTS = ("train", "val", "test")
SPLIT_BY = ("subject", "image")
CSV_COLUMNS = ("path", "split", "label", "subject", "group", "digest")
DEFAULT_RATIOS = (0.6, 0.2, 0.2)
_SUBJECT_TRIALS = 200  # seeded orders tried for subject groups; single cells reach their targets in one pass


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
    """

    parts: dict[str, list[Cell]]
    groups: dict[str, str]
    subject_level: bool
    seed: int | None
    ratios: tuple[float, ...]
    classes: tuple[str, ...] = field(default=())

    def cells(self) -> Iterator[tuple[str, Cell]]:
        for part in PARTS:
            for cell in self.parts.get(part, []):
                yield part, cell

    def group_of(self, cell: Cell) -> str:
        return self.groups.get(cell.subject, cell.subject) if cell.subject is not None else ""

    @property
    def hash(self) -> str:
        """Stable across machines: the (path, part) pairs, paths taken relative to the folder that holds all cells."""
        pairs = [(cell.path, part) for part, cell in self.cells()]
        base = os.path.commonpath([str(PurePath(path).parent) for path, _ in pairs]) if pairs else ""
        lines = sorted(f"{PurePath(os.path.relpath(path, base)).as_posix()}\t{part}\n" for path, part in pairs)
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
        header = ["part", *classes, "all cells", "subject groups"]
        return f"split {self.hash}, {level}, {ratios}\n{text_table(header, rows)}"


@dataclass(slots=True)
class _Unit:
    """What is placed as a whole: a subject group or a single cell."""

    key: str
    cells: list[Cell]
    counts: Counter[str]
    fixed: str | None


def make_split(
    table: CellTable, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0, *, by: str | None = None
) -> Split:
    """Split ``table`` into train/val/test by subject group (``by="subject"``, the default when every cell has a
    subject) or by image. Cells pinned with ``fixed_split`` go to their part, which then receives no other cells;
    the remaining parts share the rest in proportion to their ratios."""
    ratios = _check_ratios(ratios)
    subject_level = _subject_level(table, by)
    units = _units(table, subject_level)
    pinned = {unit.fixed for unit in units if unit.fixed is not None}
    free = {part: ratio for part, ratio in zip(PARTS, ratios, strict=True) if part not in pinned}
    weight = sum(free.values())
    if weight <= 0:
        raise DataError(f"{table.root}: every part with a ratio above 0 is already filled by pinned cells")
    placement = _assign(units, {part: ratio / weight for part, ratio in free.items()}, seed, subject_level)
    return _build(table, units, placement, subject_level, seed, ratios)


def kfold_splits(table: CellTable, k: int, seed: int = 0, *, by: str | None = None) -> list[Split]:
    """Cross-validation: k balanced folds of whole subject groups; split i tests on fold i, validates on fold i+1
    and trains on the other k-2, so every cell is tested exactly once."""
    if k < 3:
        raise BlastscopeError(f"cross-validation needs k >= 3 (one fold to test, one to validate), not {k}")
    subject_level = _subject_level(table, by)
    units = _units(table, subject_level)
    if any(unit.fixed for unit in units):
        raise DataError(
            f"{table.root}: cross-validation tests every cell in turn, so no cell can be pinned to a part; "
            "scan with prelim='pool'"
        )
    folds = [f"fold {index + 1}" for index in range(k)]
    fold_of = _assign(units, {fold: 1 / k for fold in folds}, seed, subject_level)
    ratios = ((k - 2) / k, 1 / k, 1 / k)
    splits = []
    for index, fold in enumerate(folds):
        roles = {fold: "test", folds[(index + 1) % k]: "val"}
        placement = {key: roles.get(assigned, "train") for key, assigned in fold_of.items()}
        splits.append(_build(table, units, placement, subject_level, seed, ratios))
    return splits


def check_leakage(split: Split) -> None:
    """Raise LeakageError if an identical file, or (for subject-level splits) a subject group, is in two parts."""
    file_part: dict[str, tuple[str, Cell]] = {}
    group_part: dict[str, tuple[str, Cell]] = {}
    for part, cell in split.cells():
        other = file_part.setdefault(cell.digest, (part, cell))
        if other[0] != part:
            raise LeakageError(
                f"identical files in {other[0]} and {part}: {other[1].path} and {cell.path}; "
                "make a new split with `blastscope data split`"
            )
        if not split.subject_level:
            continue
        if cell.subject is None:
            raise LeakageError(f"{cell.path} has no subject id in a subject-level split; split by image instead")
        group = split.group_of(cell)
        other = group_part.setdefault(group, (part, cell))
        if other[0] != part:
            raise LeakageError(
                f"subject group {group} sits in {other[0]} ({other[1].path.name}) and {part} ({cell.path.name}); "
                "make a new split with `blastscope data split`"
            )


def write_split_csv(split: Split, path: Path | str) -> None:
    """Write ``path,split,label,subject,group,digest`` rows; paths are absolute, digests find moved files again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for part, cell in split.cells():
            writer.writerow(
                [Path(cell.path).as_posix(), part, cell.label, cell.subject or "", split.group_of(cell), cell.digest]
            )


def read_split_csv(path: Path | str, table: CellTable | None = None) -> Split:
    """Read a split written by :func:`write_split_csv` and check it for leakage.

    With ``table``, rows are matched to its cells by digest, so the split survives moving the data, and a row whose
    file is not in the dataset is an error. The split counts as subject-level when every cell has a group and no
    group spans two parts.
    """
    path = Path(path)
    rows = _split_rows(path)
    by_digest = {cell.digest: cell for cell in table.cells} if table is not None else {}
    parts: dict[str, list[Cell]] = {part: [] for part in PARTS}
    groups: dict[str, str] = {}
    group_parts: dict[str, set[str]] = defaultdict(set)
    for line, row in rows:
        cell = _row_cell(path, line, row, table, by_digest)
        parts[row["split"]].append(cell)
        if cell.subject is not None:
            groups[cell.subject] = row["group"] or cell.subject
            group_parts[groups[cell.subject]].add(row["split"])
    subject_level = all(cell.subject is not None for _, cell in _iter(parts)) and all(
        len(used) == 1 for used in group_parts.values()
    )
    total = sum(len(cells) for cells in parts.values())
    classes = table.classes if table is not None else class_order(cell.label for _, cell in _iter(parts))
    split = Split(
        parts=parts,
        groups=groups,
        subject_level=subject_level,
        seed=None,
        ratios=tuple(len(parts[part]) / total for part in PARTS),
        classes=classes,
    )
    check_leakage(split)
    return split


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns a person can scan: numbers right-aligned, words left-aligned."""
    cells = [[str(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    numeric = [
        column > 0 and all(row[column][:1].isdigit() for row in cells[1:] if row[column])
        for column in range(len(header))
    ]
    lines = [
        "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def _iter(parts: Mapping[str, list[Cell]]) -> Iterator[tuple[str, Cell]]:
    return ((part, cell) for part, cells in parts.items() for cell in cells)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    ratios = tuple(float(ratio) for ratio in ratios)
    if len(ratios) != len(PARTS) or min(ratios) < 0 or ratios[0] <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise BlastscopeError(
            f"ratios {','.join(f'{r:g}' for r in ratios)} must be three numbers >= 0 for train,val,test "
            "that sum to 1, train above 0 (e.g. 0.6,0.2,0.2)"
        )
    return ratios


def _subject_level(table: CellTable, by: str | None) -> bool:
    if by not in (None, *SPLIT_BY):
        raise BlastscopeError(f"split by must be one of {', '.join(SPLIT_BY)}, not {by!r}")
    missing = [cell for cell in table.cells if cell.subject is None]
    if by == "image" or (by is None and len(missing) == len(table.cells)):
        return False
    if missing:
        raise DataError(
            f"{len(missing):,} cells have no subject id (e.g. {missing[0].path}); give every cell a subject "
            "or split by image (--split-by image)"
        )
    return True


def _units(table: CellTable, subject_level: bool) -> list[_Unit]:
    if not subject_level:
        return [_Unit(cell.digest, [cell], Counter([cell.label]), cell.fixed_split) for cell in table.cells]
    groups = subject_groups(table)
    members: dict[str, list[Cell]] = defaultdict(list)
    for cell in table.cells:
        members[groups[cell.subject]].append(cell)
    units = []
    for key, cells in members.items():
        fixed = {cell.fixed_split for cell in cells if cell.fixed_split is not None}
        if len(fixed) > 1:
            raise DataError(f"subject group {key} has cells pinned to {' and '.join(sorted(fixed))}; pin one part")
        units.append(_Unit(key, cells, Counter(cell.label for cell in cells), next(iter(fixed), None)))
    return sorted(units, key=lambda unit: unit.key)


def _assign(units: Sequence[_Unit], ratios: Mapping[str, float], seed: int, subject_level: bool) -> dict[str, str]:
    """Place every unit in a part: pinned units where pinned, free ones by the best of several seeded greedy passes."""
    placement = {unit.key: unit.fixed for unit in units if unit.fixed is not None}
    free = [unit for unit in units if unit.fixed is None]
    totals = sum((unit.counts for unit in free), Counter())
    receiving = [part for part, ratio in ratios.items() if ratio > 0]
    _check_enough_units(free, totals, receiving, subject_level)
    targets = {part: {label: ratios[part] * totals[label] for label in totals} for part in receiving}
    rng = random.Random(seed)
    best: tuple[float, dict[str, str]] | None = None
    for _ in range(_SUBJECT_TRIALS if subject_level else 1):
        order = list(free)
        rng.shuffle(order)
        result = _greedy(order, targets, totals)
        if result is not None and (best is None or result[0] < best[0]):
            best = result
    if best is None:
        raise DataError("no split found that puts every class in every part; add subjects or set a part's ratio to 0")
    return placement | best[1]


def _check_enough_units(
    free: Sequence[_Unit], totals: Counter[str], receiving: Sequence[str], subject_level: bool
) -> None:
    unit_name = "subject groups" if subject_level else "cells"
    for label in sorted(totals):
        units = sum(1 for unit in free if unit.counts[label])
        if units < len(receiving):
            raise DataError(
                f"class '{label}' has only {units} {unit_name}, too few for {len(receiving)} parts "
                f"({', '.join(receiving)}): add subjects, set a part's ratio to 0 "
                "(e.g. --ratios 0.8,0.2,0 (data split) / --split-ratios 0.8,0.2,0 (train))"
                + (", or split by image (--split-by image)" if subject_level else "")
            )


def _greedy(
    order: Sequence[_Unit], targets: Mapping[str, Mapping[str, float]], totals: Counter[str]
) -> tuple[float, dict[str, str]] | None:
    """One pass; None when some part ends up without some class."""
    counts = {part: Counter() for part in targets}
    lacking = {label: set(targets) for label in totals}
    remaining = Counter(label for unit in order for label in unit.counts)
    placement = {}
    for unit in order:
        candidates = list(targets)
        for label in unit.counts:
            if lacking[label] and remaining[label] <= len(lacking[label]):
                candidates = [part for part in candidates if part in lacking[label]] or candidates
        part = min(candidates, key=lambda p: _cost_change(counts[p], targets[p], unit.counts, totals))
        counts[part].update(unit.counts)
        placement[unit.key] = part
        for label in unit.counts:
            remaining[label] -= 1
            lacking[label].discard(part)
    if any(lacking.values()):
        return None
    cost = sum(
        ((counts[part][label] - targets[part][label]) / totals[label]) ** 2 for part in targets for label in totals
    )
    return cost, placement


def _cost_change(
    counts: Counter[str], targets: Mapping[str, float], adding: Counter[str], totals: Counter[str]
) -> float:
    """Change of the summed squared, class-normalised deviation from the targets if ``adding`` joined this part."""
    return sum(
        count * (2 * (counts[label] - targets[label]) + count) / totals[label] ** 2 for label, count in adding.items()
    )


def _build(
    table: CellTable,
    units: Sequence[_Unit],
    placement: Mapping[str, str],
    subject_level: bool,
    seed: int,
    ratios: tuple[float, ...],
) -> Split:
    parts: dict[str, list[Cell]] = {part: [] for part in PARTS}
    for unit in units:
        parts[placement[unit.key]].extend(unit.cells)
    for cells in parts.values():
        cells.sort(key=lambda cell: cell.path)
    groups = subject_groups(table) if table.has_subjects else {}
    split = Split(parts, groups, subject_level, seed, ratios, tuple(table.classes))
    check_leakage(split)
    return split


def _split_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(CSV_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: not a split CSV, missing columns {', '.join(sorted(missing))}")
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot be read as a split CSV ({error})") from error
    for line, row in rows:
        if row["split"] not in PARTS:
            raise DataError(f"{path}, line {line}: split '{row['split']}' is not one of {', '.join(PARTS)}")
    if not rows:
        raise DataError(f"{path}: the split CSV has no rows; make one with `blastscope data split`")
    return rows


def _row_cell(
    path: Path, line: int, row: Mapping[str, str], table: CellTable | None, by_digest: Mapping[str, Cell]
) -> Cell:
    if table is None:
        return Cell(Path(row["path"]), row["label"], row["subject"] or None, row["digest"])
    cell = by_digest.get(row["digest"])
    if cell is None:
        raise DataError(
            f"{path}, line {line}: {row['path']} is not in the dataset at {table.root} (no file has its digest); "
            "the split was made for other data, make a new one with `blastscope data split`"
        )
    if cell.label != row["label"]:
        raise DataError(f"{path}, line {line}: {cell.path} is '{cell.label}' in the dataset but '{row['label']}' here")
    return cell
