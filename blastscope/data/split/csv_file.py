"""A split as a CSV file: the form in which a split is kept beside a run, shared, and read back to train again.

Rows carry each file's content digest as well as its path, so a split read back against a dataset finds its cells
again after the data has moved, and a split read back alone can be checked against the files its paths name now
(:func:`changed_cells`); every split read back is checked for leakage before it is returned.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from blastscope.data.discover import class_order, content_digest
from blastscope.data.reading import read_image_file
from blastscope.data.split.leakage import check_leakage
from blastscope.data.split.model import PARTS, Split
from blastscope.data.table import Cell, CellTable
from blastscope.errors import DataError, ImageError
from blastscope.storage import write_atomically

CSV_COLUMNS = ("path", "split", "label", "subject", "group", "digest")


class SplitContentsMissing(DataError):
    """Rows of a split CSV whose recorded contents no file of the dataset has: its images were changed, redrawn or
    removed since the split was written, or it was made for other data.

    Attributes
    ----------
    first : str
        The file the first such row names.
    count, rows : int
        How many rows are so, of how many.
    """

    def __init__(self, message: str, first: str, count: int, rows: int) -> None:
        super().__init__(message)
        self.first, self.count, self.rows = first, count, rows


def write_split_csv(split: Split, path: Path | str) -> None:
    """Write one ``path,split,label,subject,group,digest`` row per cell, in part order.

    Parameters
    ----------
    split : Split
        The split to keep.
    path : Path or str
        Where to write; missing parent folders are created. Paths in the file are absolute, with ``/`` separators.

    Raises
    ------
    OSError
        When the file cannot be written (a full disk). The file is written whole or not at all: rows go to a temporary
        file in the same folder, flushed to disk and renamed into place, so a failure leaves the previous ``path`` (or
        none) and no partial split that a later run could read back as a smaller one.
    """

    def rows(handle: IO[bytes]) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(CSV_COLUMNS)
        for part, cell in split.cells():
            group = split.group_of(cell)
            writer.writerow([Path(cell.path).as_posix(), part, cell.label, cell.subject or "", group, cell.digest])
        text.flush()
        text.detach()  # leave the handle open: write_atomically syncs and closes it

    write_atomically(Path(path), rows)


def read_split_csv(path: Path | str, table: CellTable | None = None) -> Split:
    """Read a split written by :func:`write_split_csv` and check it for leakage.

    Parameters
    ----------
    path : Path or str
        The split CSV.
    table : CellTable or None
        The dataset the split is for. With it, rows are matched to its cells by digest, so the split survives moving
        the data; without it, cells are built from the rows alone.

    Returns
    -------
    Split
        With ``seed`` None and ``ratios`` the achieved shares of all cells. It counts as subject-level when every cell
        has a group and no group spans two parts. With ``table``, its cells that no row names are in ``left_out``.

    Raises
    ------
    SplitContentsMissing
        With ``table``, when rows name contents no file of the dataset has (counted, the first one named).
    DataError
        When the file cannot be read, lacks a column, is empty, names an unknown part, holds two rows of one image
        (the same digest: the cell would count twice), or (with ``table``) holds a file with another label.
    LeakageError
        When an identical file, or a subject group of a subject-level split, sits in two parts.
    """
    path = Path(path)
    rows = _read_rows(path)
    named = _one_row_per_image(path, rows)
    by_digest = {cell.digest: cell for cell in table.cells} if table is not None else {}
    if table is not None:
        _check_contents_present(path, rows, table, by_digest)
    parts: dict[str, list[Cell]] = {part: [] for part in PARTS}
    groups: dict[str, str] = {}
    group_parts: dict[str, set[str]] = defaultdict(set)
    for line, row in rows:
        cell = _cell_of_row(path, line, row, table, by_digest)
        parts[row["split"]].append(cell)
        if cell.subject is not None:
            groups[cell.subject] = row["group"] or cell.subject
            group_parts[groups[cell.subject]].add(row["split"])
    cells = [cell for part_cells in parts.values() for cell in part_cells]
    subject_level = all(cell.subject is not None for cell in cells) and all(
        len(used) == 1 for used in group_parts.values()
    )
    split = Split(
        parts=parts,
        groups=groups,
        subject_level=subject_level,
        seed=None,
        ratios=tuple(len(parts[part]) / len(cells) for part in PARTS),
        classes=table.classes if table is not None else class_order(cell.label for cell in cells),
        left_out=[cell for cell in table.cells if cell.digest not in named] if table is not None else [],
    )
    check_leakage(split)
    return split


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a split CSV with their line numbers, for errors a person can find in the file."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(CSV_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DataError(
                    f"{path}: not a split CSV, missing columns {', '.join(sorted(missing))}; write one with "
                    "`blastscope data split DATA --out FILE` and edit its split column"
                )
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot be read as a split CSV ({error})") from error
    for line, row in rows:
        if row["split"] not in PARTS:
            raise DataError(f"{path}, line {line}: split '{row['split']}' is not one of {', '.join(PARTS)}")
    if not rows:
        raise DataError(f"{path}: the split CSV has no rows; make one with `blastscope data split`")
    return rows


def _one_row_per_image(path: Path, rows: list[tuple[int, dict[str, str]]]) -> set[str]:
    """The digests the rows name; two rows of one image in different parts are a leak, left to
    :func:`check_leakage` to name, but two in one part would count the cell twice, which no count should."""
    lines: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        first = lines.setdefault(row["digest"], (line, row["split"]))
        if first[0] != line and first[1] == row["split"]:
            raise DataError(
                f"{path}, line {line}: {row['path']} is the image of line {first[0]} again (digest {row['digest']}); "
                "delete one of the two rows"
            )
    return set(lines)


def changed_cells(cells: Iterable[Cell]) -> list[Cell]:
    """The cells whose file no longer holds the bytes their recorded digest was taken of.

    A split read back without its dataset carries the digests of when it was written, while its paths may since hold
    other images (a dataset redrawn or re-exported under the same names). Each file is read and hashed once; one that
    cannot be read is not counted here, as reading it for a model reports it.

    Parameters
    ----------
    cells : iterable of Cell
        Cells as a split CSV records them (:func:`read_split_csv` without a table).

    Returns
    -------
    list of Cell
        The changed cells, in the order given.
    """
    changed = []
    for cell in cells:
        try:
            data = read_image_file(Path(cell.path))
        except ImageError:
            continue
        if content_digest(data) != cell.digest:
            changed.append(cell)
    return changed


def _check_contents_present(
    path: Path, rows: list[tuple[int, dict[str, str]]], table: CellTable, by_digest: Mapping[str, Cell]
) -> None:
    """Every row's digest names a cell of ``table``; else one error counting the rows that do not."""
    missing = [(line, row) for line, row in rows if row["digest"] not in by_digest]
    if missing:
        line, row = missing[0]
        raise SplitContentsMissing(
            f"{path}, line {line}: {row['path']} is not in the dataset at {table.root} with the contents the split "
            f"recorded (no file has its digest; {len(missing)} of its {len(rows)} rows are so): the split was made "
            "for other data or its images changed since, make a new one with `blastscope data split`",
            row["path"],
            len(missing),
            len(rows),
        )


def _cell_of_row(
    path: Path, line: int, row: Mapping[str, str], table: CellTable | None, by_digest: Mapping[str, Cell]
) -> Cell:
    """The dataset's cell a row names (found by digest, present: see :func:`_check_contents_present`), or a cell
    built from the row when there is no dataset."""
    if table is None:
        return Cell(Path(row["path"]), row["label"], row["subject"] or None, row["digest"])
    cell = by_digest[row["digest"]]
    if cell.label != row["label"]:
        raise DataError(f"{path}, line {line}: {cell.path} is '{cell.label}' in the dataset but '{row['label']}' here")
    return cell
