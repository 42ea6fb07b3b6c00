"""Which cells an evaluation scores: a part of the run's own split, or the unseen cells of another dataset.

Cells the run trained or validated on never count as new data, and whether the result may be read at subject level
(no person in both training and the evaluated data, which needs subject ids on both sides) is decided here, with a
note for the reader when it may not. New data may hold any of the run's classes, one alone too (the normal cells of
one new person). Files its scan sets aside (unreadable, outside a class folder, not a C-NMC name...) and cells whose
image cannot be decoded or whose white cell the run's segmentation cannot find (:func:`readable_cells`) are reported
with their reasons, never scored as blanks. A run that normalises colours per person needs every scored cell's
subject id, checked here before any image is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from blastscope.data.attribution import dataset_attribution
from blastscope.data.cache import DecodedCache
from blastscope.data.classes import match_class, match_class_names
from blastscope.data.discover import scan_dataset
from blastscope.data.people import require_subjects
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError, DataError
from blastscope.inference.predict import readable
from blastscope.runs import TrainedRun

SPLITS = ("test", "val", "train")
SKIP_REASONS = 5  # reasons for skipped files of new data noted one per line; the rest in one line


def cells_to_score(
    run: TrainedRun, data: Path | str | None, split: str, notes: list[str]
) -> tuple[list[Cell], str, bool, str | None, list[tuple[str, str]]]:
    """The cells to evaluate, where they come from, whether results are subject-level, whom to credit, and the files
    of ``data`` its scan set aside.

    Parameters
    ----------
    run : TrainedRun
    data : path or None
        A dataset folder to score every unseen cell of, instead of a part of the run's split.
    split : {"test", "val", "train"}
        The part of the run's own split (when ``data`` is ``None``).
    notes : list of str
        Appended to (and, for image-level results, prepended to) with what a reader must know.

    Returns
    -------
    cells : list of Cell
    source : str
        What was scored, for the summary.
    subject_level : bool
        Whether every cell has a subject and no evaluated subject gave cells to training or validation (with
        ``data``: which every training and validation cell's subject id must show).
    attribution : str or None
        The data's credit line.
    skipped : list of (str, str)
        Path and reason of each file of ``data`` its scan set aside; empty for a split.

    Raises
    ------
    BlastscopeError
        For an unknown split.
    DataError
        For an empty split, a dataset with a class the run does not have, or one whose every cell the run has seen;
        for a run that normalises colours per person (``--colour-norm subject``), cells without a subject id.
    """
    skipped: list[tuple[str, str]] = []
    shared, seen_unknown = False, False
    if data is None:
        cells, source = _split_cells(run, split), f"{split} split of {run.run_dir}"
        attribution = run.config.get("attribution")
        subject_level = bool(run.split.subject_level) and all(cell.subject for cell in cells)
        if split != "test":
            notes.append(
                f"the {split} split shaped this model (training or checkpoint/threshold/temperature choice), "
                "so its scores here are optimistic; the test split is the honest one"
            )
    else:
        (cells, attribution, skipped), source = _external_cells(run, Path(data), notes), str(data)
        shared = _shared_subjects(run, cells, notes)
        seen_unknown = any(cell.subject is None for part in ("train", "val") for cell in run.split.parts.get(part, []))
        subject_level = all(cell.subject for cell in cells) and not shared and not seen_unknown
    if run.preprocessing.colour_norm == "subject":
        require_subjects(cells, source, "score them with `blastscope predict`, which groups images by --person-by")
    if not subject_level:
        if data is not None and not all(cell.subject for cell in cells):
            why = (
                "the evaluated cells carry no subject ids, so whether their people also gave cells to training "
                "cannot be checked"
            )
        elif seen_unknown and not shared:
            why = (
                "the run's training cells carry no subject ids, so whether the evaluated people also gave cells to "
                "training cannot be checked"
            )
        else:
            why = "cells of one subject may be in both the training and the evaluated data"
        notes.insert(
            0,
            f"results are image-level: {why}; these numbers can be optimistic and do not say how the "
            "model does on new people",
        )
    return cells, source, subject_level, attribution, skipped


def readable_cells(
    run: TrainedRun, cells: Sequence[Cell], notes: list[str], what: str
) -> tuple[list[Cell], list[bool], list[tuple[str, str]]]:
    """The cells the run's model can be given, read once through the decoded-image cache as its preprocessing says.

    Parameters
    ----------
    run : TrainedRun
        Its ``preprocessing`` (size, interpolation, ``segment`` mode) says how each cell is read.
    cells : sequence of Cell
    notes : list of str
        Appended to with how many cells were set aside and why (the first one's reason), when any was.
    what : str
        The cells' role in the note ("scored", "validation").

    Returns
    -------
    cells : list of Cell
        The readable cells, in order.
    segmented : list of bool
        Per readable cell: whether it was cut out of its background.
    skipped : list of (str, str)
        Path and reason of each cell set aside.

    Raises
    ------
    DataError
        When cells were given and none of them can be read.
    """
    found = readable(cells, run.preprocessing, DecodedCache())
    skipped = [(str(cell.path), reason) for cell, reason in found.skipped]  # type: ignore[union-attr]
    if skipped:
        path, reason = skipped[0]
        notes.append(
            f"{len(skipped)} of {len(cells)} {what} cells were skipped, unreadable or with no cell found "
            f"(--segment {run.preprocessing.segment}); e.g. {path}: {reason}"
        )
    if cells and not found.items:
        path, reason = skipped[0]
        raise DataError(f"none of the {len(cells)} {what} cells can be used, e.g. {path}: {reason}")
    return list(found.items), found.segmented, skipped  # type: ignore[arg-type]


def _split_cells(run: TrainedRun, split: str) -> list[Cell]:
    if split not in SPLITS:
        raise BlastscopeError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    cells = run.split.parts.get(split, [])
    if not cells:
        raise DataError(f"{run.run_dir}: the run's {split} split is empty; evaluate another split or pass --data DIR")
    if not any(cell.path.exists() for cell in cells):
        raise DataError(
            f"{run.run_dir}: none of its {len(cells)} {split} cells is where the run recorded it (e.g. "
            f"{cells[0].path}): the data moved or is gone; score it where it is now with `blastscope evaluate "
            f"{run.run_dir} --data NEW_PATH` (cells the run trained or validated on are left out by their contents)"
        )
    return list(cells)


def _external_cells(run: TrainedRun, data: Path, notes: list[str]) -> tuple[list[Cell], str, list[tuple[str, str]]]:
    """Every cell of a dataset the run was not trained on (cells identical to its training or validation cells go),
    labelled with the run's class names, the dataset's credit line, and the files its scan set aside (each reason
    noted with its count and first file).

    Class names are matched ignoring case (a run trained on ``all/hem`` scores ``ALL/HEM``); the data may hold any of
    the run's classes, one alone too; a class the run does not have is refused.
    """
    table = scan_dataset(data, for_splits=False)
    names = match_class_names(table.classes, run.classes)
    if names is None:
        unknown = [name for name in table.classes if match_class(name, run.classes) is None]
        raise DataError(
            f"{data}: classes {', '.join(table.classes)} differ from the run's {', '.join(run.classes)}: "
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among them; evaluate on class folders "
            "named as the run's (any of them; case does not matter)"
        )
    seen = {cell.digest for part in ("train", "val") for cell in run.split.parts.get(part, [])}
    cells = [replace(cell, label=names[cell.label]) for cell in table.cells if cell.digest not in seen]
    if len(cells) < len(table.cells):
        notes.append(
            f"{len(table.cells) - len(cells)} cells of {data} are identical to cells the run trained or "
            "validated on and were left out"
        )
    notes.extend(_skip_notes(table.skipped, data))
    if not cells:
        raise DataError(f"{data}: every cell is one the run trained or validated on; evaluate on unseen cells")
    return cells, dataset_attribution(table), [(str(path), reason) for path, reason in table.skipped]


def _skip_notes(skipped: Sequence[tuple[Path, str]], data: Path) -> list[str]:
    """One line per reason files of ``data`` were set aside: how many, the first of them, and the reason."""
    by_reason: dict[str, list[Path]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(path)
    lines = []
    for reason, paths in list(by_reason.items())[:SKIP_REASONS]:
        if len(paths) == 1:
            lines.append(f"1 file of {data} was skipped ({paths[0]}): {reason}")
        else:
            lines.append(f"{len(paths)} files of {data} were skipped (first: {paths[0]}): {reason}")
    if len(by_reason) > SKIP_REASONS:
        rest = sum(len(paths) for paths in list(by_reason.values())[SKIP_REASONS:])
        lines.append(
            f"{rest} more file{'s' * (rest != 1)} of {data} skipped for other reasons (evaluation.json's skipped_cells "
            "lists each with its reason)"
        )
    return lines


def _shared_subjects(run: TrainedRun, cells: Sequence[Cell], notes: list[str]) -> bool:
    """Whether subjects of the evaluated cells also gave cells to the run's training or validation split."""
    seen = {cell.subject for part in ("train", "val") for cell in run.split.parts.get(part, []) if cell.subject}
    shared = sorted({cell.subject for cell in cells if cell.subject} & seen)
    if shared:
        notes.append(
            f"{len(shared)} subjects of the evaluated data also gave cells to training or validation "
            f"({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''})"
        )
    return bool(shared)


def class_indices(cells: Sequence[Cell], classes: Sequence[str]) -> np.ndarray:
    """The class index (into ``classes``) of each cell's label: int64 array of shape (N,)."""
    return np.array([classes.index(cell.label) for cell in cells], dtype=np.int64)
