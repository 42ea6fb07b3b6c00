"""What a comparison reads besides the evaluations: the dataset card of the shared split and each run's history."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from blastscope.data.attribution import dataset_attribution
from blastscope.data.discover import natural_key
from blastscope.data.split import Split
from blastscope.data.table import CellTable
from blastscope.evaluation import plots
from blastscope.workflows.report import DatasetCard


def dataset_card(table: CellTable, split: Split, positive_class: str | None) -> DatasetCard:
    """The report's dataset card: cells per class, subject and part, and where the data comes from.

    Parameters
    ----------
    table : CellTable
        The scanned dataset (root, kind, classes, duplicates, skipped files, notes).
    split : Split
        The split the card describes (under cross-validation, the first fold).
    positive_class : str or None
        The class the runs decided about (``runs_positive_class``), never guessed from the order of the classes.

    Returns
    -------
    DatasetCard
        Subjects listed by part (train, val, test), then in natural order.
    """
    cells_per_part = {part: dict(Counter(cell.label for cell in cells)) for part, cells in split.parts.items()}
    per_subject = Counter(
        (cell.subject, cell.label, part) for part, cells in split.parts.items() for cell in cells if cell.subject
    )
    parts = list(split.parts)
    order = sorted(per_subject, key=lambda key: (parts.index(key[2]), natural_key(key[0])))
    subjects = [(subject, label, part, per_subject[subject, label, part]) for subject, label, part in order]
    return DatasetCard(
        root=str(table.root),
        kind=table.kind,
        classes=tuple(table.classes),
        positive_class=positive_class,
        cells_per_part=cells_per_part,
        subjects=subjects,
        subject_level=bool(split.subject_level),
        attribution=dataset_attribution(table),
        duplicates=len(table.duplicates),
        skipped=len(table.skipped),
        notes=list(table.notes),
    )


def read_history(path: Path) -> list[plots.HistoryRow]:
    """A run's ``history.csv`` as plot rows.

    Parameters
    ----------
    path : path
        The file; a missing one (a run from elsewhere) gives no curves rather than an error.

    Returns
    -------
    list of plots.HistoryRow
        One row per logged epoch; a value missing or unreadable in the file is NaN.
    """
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            plots.HistoryRow(
                epoch=int(float(row["epoch"])),
                phase=row.get("phase") or "",
                train_loss=_float(row.get("train_loss")),
                val_loss=_float(row.get("val_loss")),
                val_weighted_f1=_float(row.get("val_weighted_f1")),
            )
            for row in csv.DictReader(handle)
        ]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
