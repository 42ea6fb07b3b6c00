"""A split as a CSV file: the form in which a split is kept beside a run, shared, and read back to train again.

Rows carry each file's content digest as well as its path, so a split read back against a dataset finds its cells
again after the data has moved; every split read back is checked for leakage before it is returned.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from blastscope.data.discover import class_order
from blastscope.data.split.leakage import check_leakage
from blastscope.data.split.model import PARTS, Split
from blastscope.data.table import Cell, CellTable
from blastscope.errors import DataError
from blastscope.storage import write_atomically

CSV_COLUMNS = ("path", "split", "label", "subject", "group", "digest")


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
        has a group and no group spans two parts.

    Raises
    ------
    DataError
        When the file cannot be read, lacks a column, is empty, names an unknown part, or (with ``table``) holds a file
        not in the dataset or with another label.
    LeakageError
        When an identical file, or a subject group of a subject-level split, sits in two parts.
    """
    path = Path(path)
    rows = _read_rows(path)
    by_digest = {cell.digest: cell for cell in table.cells} if table is not None else {}
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


def _cell_of_row(
    path: Path, line: int, row: Mapping[str, str], table: CellTable | None, by_digest: Mapping[str, Cell]
) -> Cell:
    """The dataset's cell a row names (found by digest), or a cell built from the row when there is no dataset."""
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
