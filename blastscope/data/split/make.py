"""Making splits from a cell table: one train/val/test holdout split, or k cross-validation splits.

Both turn the table into units, let :mod:`blastscope.data.split.placement` place them, and check the result for
leakage; this module owns what the caller chooses (ratios, seed, fold count, subject or image level) and the errors
that explain a bad choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from blastscope.data.discover import subject_groups
from blastscope.data.split.leakage import check_leakage
from blastscope.data.split.model import PARTS, Split
from blastscope.data.split.placement import Unit, assign, units_of
from blastscope.data.table import Cell, CellTable
from blastscope.errors import BlastscopeError, DataError

SPLIT_BY = ("subject", "image")
DEFAULT_RATIOS = (0.6, 0.2, 0.2)


def make_split(
    table: CellTable, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0, *, by: str | None = None
) -> Split:
    """Split a cell table into train, val and test, keeping subject groups whole and every class near its ratio.

    Each part receives its ratio of every class's subject groups (floor or ceiling, at least one) and, within that, of
    every class's cells as nearly as whole groups allow (see :func:`blastscope.data.split.placement.assign`): with
    subjects of very different sizes, matching cells alone could leave a part with one or two people of a class.
    Cells pinned with ``fixed_split`` go to their part, which then receives no other cells; the remaining parts share
    the rest in proportion to their ratios.

    Parameters
    ----------
    table : CellTable
        The cells to split.
    ratios : sequence of 3 float
        Target share of every class's cells in train, val and test: each >= 0, train > 0, summing to 1.
    seed : int
        Seeds the search; the same table, ratios and seed give the same split.
    by : {"subject", "image"} or None
        What is kept whole: a subject group or a single cell. None means by subject when every cell has a subject
        and by image when none has.

    Returns
    -------
    Split
        Checked for leakage, with ``seed`` and ``ratios`` recorded.

    Raises
    ------
    BlastscopeError
        When ``ratios`` are malformed or ``by`` is unknown.
    DataError
        When some cells lack a subject in a subject-level split, a subject group is pinned to two parts, pinned cells
        fill every part with a ratio above 0, or a class has too few units to reach every part.
    """
    ratios = _check_ratios(ratios)
    subject_level = _subject_level(table, by)
    units = units_of(table, subject_level)
    pinned = {unit.fixed for unit in units if unit.fixed is not None}
    free = {part: ratio for part, ratio in zip(PARTS, ratios, strict=True) if part not in pinned}
    weight = sum(free.values())
    if weight <= 0:
        raise DataError(f"{table.root}: every part with a ratio above 0 is already filled by pinned cells")
    placement = assign(units, {part: ratio / weight for part, ratio in free.items()}, seed, subject_level)
    return _build(table, units, placement, subject_level, seed, ratios)


def kfold_splits(
    table: CellTable, k: int, seed: int = 0, *, by: str | None = None, val_ratio: float | None = None
) -> list[Split]:
    """Cross-validation splits over k balanced folds of whole subject groups (or cells).

    Split i tests on fold i, so every cell is tested exactly once. Folds balance people first, then cells: each fold
    holds ``floor(n/k)`` or ``ceil(n/k)`` of the n subject groups of every class, and within that the search brings
    each fold's cells of every class as near 1/k of them as whole groups allow (a group larger than a fold's share
    overshoots; :func:`blastscope.data.split.placement.assign` gives the exact order of criteria). So no fold trains
    on, or is scored on, a handful of large subjects of a class while another gets many small ones.
    By default split i validates on fold i+1 and trains on the other k-2. With ``val_ratio`` it validates on that
    share of every class's subject groups and cells among the other k-1 folds, drawn as whole units by the same
    search, and trains on the rest: training keeps ``(k-1)/k * (1-val_ratio)`` of the cells instead of ``(k-2)/k``
    (53% instead of 33% at k=3, val_ratio=0.2).

    Parameters
    ----------
    table : CellTable
        The cells to fold; none may be pinned to a part.
    k : int
        Number of folds: at least 3, or 2 with ``val_ratio``.
    seed : int
        Seeds the search; the same table, k, seed and val_ratio give the same folds.
    by : {"subject", "image"} or None
        What is kept whole, as for :func:`make_split`.
    val_ratio : float, optional
        In (0, 1): validate on this share of the training folds instead of on the next fold.

    Returns
    -------
    list of Split
        k splits, each checked for leakage, with ratios ``((k-2)/k, 1/k, 1/k)``, or with ``val_ratio`` v
        ``((k-1)/k * (1-v), (k-1)/k * v, 1/k)``.

    Raises
    ------
    BlastscopeError
        When ``k`` is too small, ``val_ratio`` is outside (0, 1) or ``by`` is unknown.
    DataError
        When cells are pinned, some cells lack a subject in a subject-level split, a class has fewer than k units,
        or (with ``val_ratio``) a class has too few units outside some test fold for both train and val.
    """
    if val_ratio is not None and not 0 < val_ratio < 1:
        raise BlastscopeError(f"validation share {val_ratio:g} must lie between 0 and 1 (e.g. 0.2)")
    if val_ratio is None and k < 3:
        raise BlastscopeError(f"cross-validation needs k >= 3 (one fold to test, one to validate), not {k}")
    if k < 2:
        raise BlastscopeError(f"cross-validation needs k >= 2 folds, not {k}")
    subject_level = _subject_level(table, by)
    units = units_of(table, subject_level)
    if any(unit.fixed for unit in units):
        raise DataError(
            f"{table.root}: cross-validation tests every cell in turn, so no cell can be pinned to a part; "
            "scan with prelim='pool'"
        )
    folds = [f"fold {index + 1}" for index in range(k)]
    fold_of = assign(units, {fold: 1 / k for fold in folds}, seed, subject_level)
    if val_ratio is None:
        ratios = ((k - 2) / k, 1 / k, 1 / k)
    else:
        ratios = ((k - 1) / k * (1 - val_ratio), (k - 1) / k * val_ratio, 1 / k)
    splits = []
    for index, fold in enumerate(folds):
        if val_ratio is None:
            roles = {fold: "test", folds[(index + 1) % k]: "val"}
            placement = {key: roles.get(assigned, "train") for key, assigned in fold_of.items()}
        else:
            rest = [unit for unit in units if fold_of[unit.key] != fold]
            inner = assign(rest, {"train": 1 - val_ratio, "val": val_ratio}, seed, subject_level)
            placement = {key: "test" if assigned == fold else inner[key] for key, assigned in fold_of.items()}
        splits.append(_build(table, units, placement, subject_level, seed, ratios))
    return splits


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """The ratios as floats, or an error that shows the expected form."""
    ratios = tuple(float(ratio) for ratio in ratios)
    finite = all(math.isfinite(ratio) for ratio in ratios)  # NaN passes every comparison below
    if not finite or len(ratios) != len(PARTS) or min(ratios) < 0 or ratios[0] <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise BlastscopeError(
            f"ratios {','.join(f'{r:g}' for r in ratios)} must be three numbers >= 0 for train,val,test "
            "that sum to 1, train above 0 (e.g. 0.6,0.2,0.2)"
        )
    return ratios


def _subject_level(table: CellTable, by: str | None) -> bool:
    """Whether to keep subject groups whole: asked for, or (by default) possible because every cell has a subject."""
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


def _build(
    table: CellTable,
    units: Sequence[Unit],
    placement: Mapping[str, str],
    subject_level: bool,
    seed: int,
    ratios: tuple[float, ...],
) -> Split:
    """The split a placement describes, cells sorted by path within each part, checked for leakage."""
    parts: dict[str, list[Cell]] = {part: [] for part in PARTS}
    for unit in units:
        parts[placement[unit.key]].extend(unit.cells)
    for cells in parts.values():
        cells.sort(key=lambda cell: cell.path)
    groups = subject_groups(table) if table.has_subjects else {}
    split = Split(parts, groups, subject_level, seed, ratios, tuple(table.classes))
    check_leakage(split)
    return split
